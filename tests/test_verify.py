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
    # seals are not compared: a stored record holding more than the rerun's (its timings) has another seal
    from bench.records import sealed_text

    stored = next((results / "runs").glob("*/record.json"))
    record = json.loads(stored.read_text())
    stored.write_text(sealed_text({**record, "timings": {"train": 12.5}}, stored.parent))
    assert main([*argv[:-1], str(tmp_path / "scratch1")]) == 0
    assert "2 of 2 rerun runs bit-identical" in capsys.readouterr().out
    rerun = tmp_path / "scratch1" / "runs" / stored.parent.name / "record.json"
    assert json.loads(stored.read_text())["seal"] != json.loads(rerun.read_text())["seal"]
    # a stored record whose metric differs from what the code computes now (sealed: written by older code) is
    # reported, with the key
    record["metrics"]["overall"]["ndcg@10"] += 0.25
    stored.write_text(sealed_text(record, stored.parent))
    assert main([*argv[:-1], str(tmp_path / "scratch2")]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 rerun runs bit-identical" in out and "0.25 (overall.ndcg@10)" in out
    # edited by hand (its seal broken), the record is no stored run: the rerun compares the other one only
    record["metrics"]["overall"]["ndcg@10"] = 0.5  # under the seal it was written with
    stored.write_text(json.dumps(record))
    assert main([*argv[:-1], str(tmp_path / "scratch3")]) == 0
    captured = capsys.readouterr()
    assert "1 of 1 rerun runs bit-identical" in captured.out
    assert main(["verify", "--records", "--results", str(results)]) == 1
    assert f"bench verify: {stored}: content does not match its seal" in capsys.readouterr().out


def test_verify_compares_unsealed_stored_records():
    """A legacy (unsealed) stored record is compared like a sealed one: the seal is never part of the comparison."""
    from bench.verify import comparable, metric_difference, provenance_differences

    stored = {"metrics": {"overall": {"ndcg@10": 0.1}}, "provenance": {"packages": {"torch": "x"}}}
    rerun = {**stored, "seal": {"algorithm": "sha256", "content": "0" * 64, "files": {}}}
    assert comparable(rerun) == stored and comparable(stored) == stored
    assert metric_difference(comparable(stored)["metrics"], comparable(rerun)["metrics"]) == (0.0, None)
    assert provenance_differences(comparable(stored), comparable(rerun)) == []


def test_verify_samples_with_a_seed(results, tmp_path, capsys):
    base = ["verify", "--suite", "smoke", "--sample", "1", "--results", str(results), "--cache", str(tmp_path)]
    assert main([*base, "--scratch", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    assert main([*base, "--scratch", str(tmp_path / "b")]) == 0
    assert "1 of 1 rerun" in first and first.split("\n", 2)[2] == capsys.readouterr().out.split("\n", 2)[2]
    assert main(["verify", "--suite", "coldstart", "--results", str(tmp_path / "empty")]) == 2
