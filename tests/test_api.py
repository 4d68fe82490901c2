"""The Python API (bench.api) and its documentation: the examples of docs/api.md run as they are."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.api import load_results, run
from bench.errors import BenchError

ROOT = Path(__file__).resolve().parent.parent


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), flags=re.S)


def test_the_documented_examples_run_and_read_the_records(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the examples use the default folders (results/, datasets/cache/)
    namespace: dict = {}
    examples = _examples()
    assert len(examples) == 2
    for code in examples:
        exec(compile(code, "docs/api.md", "exec"), namespace)  # noqa: S102 - the documentation's own examples
    out = capsys.readouterr().out
    assert "lightgcn" in out and "llminit-var" in out
    cell = namespace["cell"]
    assert sorted(cell["method"].unique()) == ["llminit-var", "random"] and set(cell["seed"]) == {0}
    for _, row in cell[(cell.segment == "overall") & (cell.metric == "ndcg@10")].iterrows():
        record = json.loads((ROOT / "results" / "runs" / row["run_id"] / "record.json").read_text())
        assert row["value"] == record["metrics"]["overall"]["ndcg@10"]  # the stored record, nothing retrained
    warm = namespace["frame"]
    assert set(warm["suite"]) == {"warm"} and warm["run_id"].nunique() >= 72


def test_load_results_of_given_runs_and_bad_input():
    some = sorted(p.parent.name for p in (ROOT / "results" / "runs").glob("*/record.json"))[:2]
    frame = load_results(runs=some, results=ROOT / "results")
    assert list(dict.fromkeys(frame["run_id"])) == some
    with pytest.raises(BenchError, match="give suite=... or runs="):
        load_results(results=ROOT / "results")
    with pytest.raises(BenchError, match="no stored record for run id ffff"):
        load_results(runs=["ffff"], results=ROOT / "results")
    with pytest.raises(BenchError, match="missing: backbone, methods"):
        run(dataset="ml-100k", split="temporal_loo")
    with pytest.raises(BenchError, match="unknown"):
        run(dataset="ml-100k", split="temporal_loo", backbone="lightgcn", methods="random",
            settings={"backbone": {"epochz": 3}}, results=ROOT / "results")
