"""Issue 27: ad-hoc runs take a named CPU-sized profile (recorded, said first), and every `bench run` ends with an
answer on screen; `bench table --runs / --last` show stored runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.records import ResultStore
from bench.spec import adhoc_suite, expand, load_suite

RESULTS = Path(__file__).resolve().parent.parent / "results"


def test_an_adhoc_run_of_a_suites_cell_is_that_cells_run():
    """The default ad-hoc profile (cpu) gives a suite's cell the suite's settings, hence its run id (its record
    is reused); `paper` gives every setting its own default (the papers' values)."""
    for suite, split, backbone, methods in (("warm", "temporal_loo", "lightgcn", ["random", "llminit-var"]),
                                            ("sequential", "temporal_loo", "gru4rec", ["llm2rec", "random"]),
                                            ("pte", "cold_users", "sasrec", ["pte"])):
        adhoc = {s.run_id for s in expand(adhoc_suite("ml-100k", split, backbone, methods, 3, "minilm"))}
        assert adhoc <= {s.run_id for s in expand(load_suite(suite))}, suite
    (paper,) = expand(adhoc_suite("ml-100k", "temporal_loo", "lightgcn", ["random"], 1, "minilm", "paper"))
    assert (paper.backbone_settings["epochs"], paper.backbone_settings["train_batch_size"],
            paper.backbone_settings["stopping_step"]) == (300, 256, 10)


def test_adhoc_runs_say_and_record_their_profile(monkeypatch, tmp_path, capsys):
    from bench import executors

    seen = {}

    def fake_run_specs(specs, store, cache, options, workers, requested, **kwargs):
        seen["requested"], seen["specs"] = requested, specs
        return {"done": 0, "skipped": len(specs), "failed": {}}

    monkeypatch.setattr(executors, "run_specs", fake_run_specs)
    argv = ["run", "--dataset", "ml-100k", "--split", "temporal_loo", "--backbone", "lightgcn", "--method",
            "random", "--results", str(tmp_path)]
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("adhoc runs, profile cpu: CPU-sized as the suites") and "--profile paper" in first
    assert seen["requested"]["profile"] == "cpu" and seen["specs"][0].backbone_settings["epochs"] == 50
    assert main([*argv, "--profile", "paper"]) == 0
    assert seen["requested"]["profile"] == "paper" and seen["specs"][0].backbone_settings["epochs"] == 300
    assert main([*argv, "--profile", "fast"]) == 2
    assert capsys.readouterr().err.strip().endswith("valid choices: cpu, paper")


def _copy_runs(tmp_path: Path, run_ids: list[str]) -> ResultStore:
    for run_id in run_ids:
        shutil.copytree(RESULTS / "runs" / run_id, tmp_path / "runs" / run_id)
    return ResultStore(tmp_path)


def _stored(n: int) -> list[str]:
    ids = sorted(p.parent.name for p in (RESULTS / "runs").glob("*/record.json"))
    return ids[:n]


def test_table_of_runs_shows_each_records_metrics_and_path(tmp_path, capsys):
    run_ids = _stored(3)
    _copy_runs(tmp_path, run_ids)
    assert main(["table", "--runs", ",".join(r[:8] for r in run_ids), "--results", str(tmp_path),
                 "--format", "csv"]) == 0
    import io

    import pandas as pd

    table = pd.read_csv(io.StringIO(capsys.readouterr().out), dtype={"run": str})
    assert table["run"].tolist() == run_ids
    for _, row in table.iterrows():
        record = json.loads((tmp_path / "runs" / row["run"] / "record.json").read_text())
        overall = record["metrics"]["overall"]
        metric = "auc" if "auc" in overall else "ndcg@10"
        assert float(row[metric]) == pytest.approx(overall[metric], abs=5e-5)
        assert row["users"] == overall["n_users"] and row["record"].endswith(f"{row['run']}/record.json")


def test_last_runs_follow_the_finish_time_in_the_records(tmp_path, capsys):
    run_ids = _stored(4)
    store = _copy_runs(tmp_path, run_ids)
    finished = {r: json.loads((tmp_path / "runs" / r / "record.json").read_text())["provenance"]["finished"]
                for r in run_ids}
    from bench.report.run_summary import latest_run_ids

    assert latest_run_ids(store, 2) == sorted(run_ids, key=finished.get, reverse=True)[:2]
    assert main(["table", "--last", "2", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(r in out for r in latest_run_ids(store, 2)) and "python -m bench table --runs" in out


@pytest.mark.parametrize("argv, message", [
    (["table"], "give one of --suite NAME, --runs ID[,ID...] or --last N"),
    (["table", "--suite", "warm", "--last", "2"], "(got --suite and --last)"),
    (["table", "--runs", "ab"], "prefix of at least 4 characters"),
    (["table", "--runs", "ffffffffffff"], "no stored run ids under"),
    (["table", "--last", "0"], "--last 0: must be >= 1"),
])
def test_table_of_runs_bad_input_is_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main([*argv, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_run_ends_with_its_answer_on_screen(tmp_path, capsys):
    """An ad-hoc run of a cell the store already holds trains nothing and prints the answer: the run's metrics
    from its record, whether it converged, its record path and the command that shows it again."""
    (spec,) = [s for s in expand(adhoc_suite("ml-100k", "temporal_loo", "lightgcn", ["random"], 1, "minilm"))]
    _copy_runs(tmp_path, [spec.run_id])
    argv = ["run", "--dataset", "ml-100k", "--split", "temporal_loo", "--backbone", "lightgcn", "--method",
            "random", "--seeds", "1", "--results", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "runs" / spec.run_id / "record.json").read_text())
    row = next(line for line in out.splitlines() if line.startswith(f"| {spec.run_id}"))
    assert f"{record['metrics']['overall']['ndcg@10']:.4f}" in row and "record.json" in row
    assert f"python -m bench table --runs {spec.run_id} --results {tmp_path}" in out


def test_the_evaluation_follows_the_methods_declared_protocol(tiny_dataset):
    """bench.runner evaluates by `Method.protocol`; a split that does not fit it is refused before any training."""
    from types import SimpleNamespace

    from bench.data.splits import make_split, resolve_split_params
    from bench.errors import BenchError
    from bench.runner import check_protocol

    ranking_split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    spec = SimpleNamespace(method="m", split="temporal_loo")
    check_protocol(spec, SimpleNamespace(protocol="ranking"), ranking_split)
    with pytest.raises(BenchError, match="pointwise protocol\\) cannot be evaluated on split 'temporal_loo'"):
        check_protocol(spec, SimpleNamespace(protocol="pointwise"), ranking_split)
    labelled = SimpleNamespace(test=ranking_split.test.assign(label=1))
    with pytest.raises(BenchError, match="whose test part is labelled pairs"):
        check_protocol(spec, SimpleNamespace(protocol="ranking"), labelled)
