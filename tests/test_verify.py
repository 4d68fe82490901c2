"""`bench verify`: rerun stored runs into a scratch store, compare metrics and sidecars bit for bit."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.cli import main


def _fake_run(spec, store, *args):
    """A deterministic 'run' (no training): metrics are a function of the spec only."""
    value = int(spec.run_id[:6], 16) / 16**6
    per_user = pd.DataFrame({"user": ["1", "2"], "ndcg@10": [value, value / 2]})
    store.write(spec.run_id, {"status": "complete", "run_id": spec.run_id, "spec": spec.model_dump(mode="json"),
                              "metrics": {"overall": {"ndcg@10": value}, "segments": {"user:cold": {"ndcg@10": 0.0}}},
                              "provenance": {"packages": {"torch": "x"}, "machine": {"torch_threads": 1}}}, per_user)


@pytest.fixture
def results(tmp_path, capsys, monkeypatch):
    """The smoke suite 'run' with the fake run into tmp_path/results (reruns use the same fake)."""
    from bench import executors, runner

    monkeypatch.setattr(runner, "_execute_locked", lambda spec, store, *a: _fake_run(spec, store))
    monkeypatch.setattr(executors, "prepare_shared", lambda *a, **k: None)
    results = tmp_path / "results"
    assert main(["run", "--suite", "smoke", "--results", str(results), "--no-table"]) == 0
    capsys.readouterr()
    return results


def test_verify_reports_identical_then_the_largest_difference(results, tmp_path, capsys):
    argv = ["verify", "--suite", "smoke", "--all", "--results", str(results), "--cache", str(tmp_path / "c"),
            "--scratch", str(tmp_path / "scratch")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 of 2 rerun runs bit-identical" in out
    # a stored record whose metric differs from what the code computes now is reported, with the key
    stored = next((results / "runs").glob("*/record.json"))
    record = json.loads(stored.read_text())
    record["metrics"]["overall"]["ndcg@10"] += 0.25
    stored.write_text(json.dumps(record))
    assert main([*argv[:-1], str(tmp_path / "scratch2")]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 rerun runs bit-identical" in out and "0.25 (overall.ndcg@10)" in out


def test_verify_samples_with_a_seed(results, tmp_path, capsys):
    base = ["verify", "--suite", "smoke", "--sample", "1", "--results", str(results), "--cache", str(tmp_path)]
    assert main([*base, "--scratch", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    assert main([*base, "--scratch", str(tmp_path / "b")]) == 0
    assert "1 of 1 rerun" in first and first.split("\n", 2)[2] == capsys.readouterr().out.split("\n", 2)[2]
    assert main(["verify", "--suite", "coldstart", "--results", str(tmp_path / "empty")]) == 2
