"""The command line: listing, validation errors (exit 2 with choices), and a full smoke suite."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.records import ResultStore
from bench.spec import RunSpec, expand, load_suite, parse_overrides


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("ml-100k", "half_history", "cold_users", "lightgcn", "sgcl", "llminit-var", "minilm",
                 "coldstart", "smoke"):
        assert word in out


@pytest.mark.parametrize("argv,needle", [
    (["run", "--dataset", "ml-100k", "--split", "temporal_loo", "--backbone", "lightgcn",
      "--method", "llminit-vra"], "unknown method 'llminit-vra'; did you mean 'llminit-var'?; valid choices: collm-din,"),
    (["run", "--dataset", "ml-100k", "--split", "temporal_lo", "--backbone", "lightgcn",
      "--method", "random"], "unknown split 'temporal_lo'"),
    (["run", "--dataset", "ml-10k", "--split", "temporal_loo", "--backbone", "lightgcn",
      "--method", "random"], "ml-100k"),
    (["run", "--dataset", "ml-100k", "--split", "temporal_loo", "--backbone", "lightgnc",
      "--method", "random"], "unknown backbone 'lightgnc'"),
    (["run", "--suite", "smoke", "--set", "backbone.epoch=3"], "backbone 'lightgcn': unknown setting 'epoch'; valid settings: embedding_size, epochs"),
    (["run", "--suite", "smoke", "--set", "method.opt=var"], "opt"),
    (["run", "--suite", "smoke", "--encoder", "bert"], "unknown encoder 'bert'"),
    (["run", "--suite", "pte", "--method", "pte-nodsit"], "unknown method of suite 'pte' 'pte-nodsit'; did you "
     "mean 'pte-nodist'?"),
    (["run", "--suite", "pte", "--backbone", "mf"], "unknown backbone of suite 'pte' 'mf'"),
    (["run", "--suite", "smoke", "--dataset", "ml-1m"], "--suite cannot be combined with --dataset"),
    (["run", "--suite", "smoke", "--split", "cold_users"], "unknown split of suite 'smoke' 'cold_users'"),
    (["run", "--suite", "nosuch"], "valid choices: coldstart"),
    (["run", "--suite", "smoke", "--profile", "fast"], "valid choices: paper"),
    (["table", "--suite", "smoke", "--results", "/nonexistent/results"], "run it first"),
])
def test_bad_input_exits_2_with_choices(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_suite_file_with_unknown_key_is_an_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndatasets: [ml-100k]\nsplits: [temporal_loo]\nbackbones: [mf]\n"
                    "methods: [random]\nepochz: 3\n")
    assert main(["run", "--suite", str(path)]) == 2
    assert "epochz" in capsys.readouterr().err


def test_run_id_is_stable_and_sensitive():
    specs = expand(load_suite("smoke"))
    again = expand(load_suite("smoke"))
    assert [s.run_id for s in specs] == [s.run_id for s in again]
    changed = expand(load_suite("smoke"), parse_overrides(["backbone.epochs=4"]))
    assert not {s.run_id for s in specs} & {s.run_id for s in changed}
    assert all(isinstance(s, RunSpec) for s in specs)


@pytest.mark.slow
def test_smoke_suite_end_to_end_and_resume(tmp_path, capsys, monkeypatch):
    results, cache = tmp_path / "results", tmp_path / "cache"
    argv = ["run", "--suite", "smoke", "--results", str(results), "--cache", str(cache), "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "done 2, skipped 0, failed 0" in out
    store = ResultStore(results)
    specs = expand(load_suite("smoke"))
    for spec in specs:
        record = store.load(spec.run_id)
        assert record["spec"] == spec.model_dump(mode="json")
        overall = record["metrics"]["overall"]
        assert 0 < overall["ndcg@10"] < overall["recall@20"] <= 1
        per_user = store.per_user(spec.run_id)
        assert len(per_user) == overall["n_users"] == record["evaluation"]["n_test_users"]
        assert per_user["ndcg@10"].mean() == pytest.approx(overall["ndcg@10"])
        assert len(record["provenance"]["dataset_hash"]) == 64 and record["provenance"]["split_hash"]
        assert record["latency"]["median_ms"] > 0 and record["params"]["trainable"] > 0
        assert record["timings"]["train"] > 0
    # golden end-to-end values: CPU runs at one torch thread are bit-identical across machines
    golden = {"random": (0.04456305236937133, 0.1279317697228145),
              "llminit-var": (0.04269628333069437, 0.13219616204690832)}
    for spec in specs:
        overall = store.load(spec.run_id)["metrics"]["overall"]
        assert (overall["ndcg@10"], overall["recall@20"]) == pytest.approx(golden[spec.method], rel=1e-12), spec.method
    llm = store.load(specs[1].run_id)
    assert llm["provenance"]["embeddings"]["dim"] == 384 and llm["method_info"]["llminit"]["k"] == 128
    # second run does no work
    assert main(argv) == 0
    assert "done 0, skipped 2, failed 0" in capsys.readouterr().out
    # tables name their sources
    assert main(["table", "--suite", "smoke", "--results", str(results), "--format", "latex"]) == 0
    latex = capsys.readouterr().out
    assert r"\toprule" in latex and specs[0].run_id in (results / "smoke" / "main.md").read_text()
    assert (results / "smoke" / "main.csv").exists()


@pytest.mark.slow
def test_crash_mid_run_leaves_no_record_and_rerun_completes(tmp_path, monkeypatch, capsys):
    import methods.classic as classic

    results, cache = tmp_path / "results", tmp_path / "cache"
    argv = ["run", "--dataset", "ml-100k", "--split", "temporal_loo", "--backbone", "mf", "--method", "random",
            "--set", "backbone.epochs=1", "--results", str(results), "--cache", str(cache)]
    original = classic.RecBoleCF.train

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(classic.RecBoleCF, "train", interrupted)
    assert main(argv) == 130
    assert not list(results.glob("runs/*/record.json"))
    monkeypatch.setattr(classic.RecBoleCF, "train", original)
    assert main(argv) == 0
    records = list(results.glob("runs/*/record.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "complete"
    assert not list(results.glob("runs/*/.record.json*"))  # no temp files left behind


def test_atomic_record_write(tmp_path):
    store = ResultStore(tmp_path)
    store.write("abc", {"status": "complete", "run_id": "abc", "x": np.float64(1.5), "spec": {},
                        "metrics": {"overall": {}}},
                pd.DataFrame({"user": ["1"], "v": [0.1]}))
    assert store.has("abc") and store.load("abc")["schema_version"] == 2
    assert sorted(p.name for p in store.run_dir("abc").iterdir()) == ["per_user.csv.gz", "record.json"]


def test_atomic_write_keeps_the_old_file_and_no_temp_when_writing_fails(tmp_path):
    from bench.records import atomic_write

    target = tmp_path / "sub" / "cache.bin"
    atomic_write(target, lambda fh: fh.write(b"old"))

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["cache.bin"]


def test_suite_runs_can_be_chosen_by_method_and_backbone_in_the_given_order(monkeypatch, tmp_path):
    """`bench run --suite S --method b,a --backbone X` runs only those of the suite's runs, b before a within
    each seed; the tables still cover the whole suite."""
    from bench import executors as runner

    chosen = {}

    def fake_run_specs(specs, *args, **kwargs):
        chosen["specs"] = list(specs)
        return {"done": 0, "skipped": len(specs), "failed": {}}

    monkeypatch.setattr(runner, "run_specs", fake_run_specs)
    argv = ["run", "--suite", "pte", "--method", "pte-nodist,random", "--backbone", "sasrec",
            "--results", str(tmp_path), "--no-table"]
    assert main(argv) == 0
    runs = [(s.method, s.backbone, s.seed) for s in chosen["specs"]]
    assert {m for m, _, _ in runs} == {"pte-nodist", "random"} and {b for _, b, _ in runs} == {"sasrec"}
    assert len(runs) == 6
    ordered = sorted(runs, key=lambda r: r[2])  # run_specs goes seed-major with a stable sort
    assert [m for m, _, _ in ordered] == ["pte-nodist", "random"] * 3
    # --split: only the suite's runs on those splits
    argv = ["run", "--suite", "paradigms", "--method", "pte", "--split", "temporal_loo,longtail",
            "--results", str(tmp_path), "--no-table"]
    assert main(argv) == 0
    runs = {(s.method, s.split) for s in chosen["specs"]}
    assert runs == {("pte", "temporal_loo"), ("pte", "longtail")} and len(chosen["specs"]) == 6


# ------------------------------------------------------------------ issue 25: file modes, verify's scratch
def test_records_get_the_mode_open_would_give_them(tmp_path):
    """Records and their sidecars are readable by others where the umask says so (not mkstemp's 0600)."""
    import os

    from bench.records import atomic_write

    previous = os.umask(0o022)
    try:
        store = ResultStore(tmp_path)
        store.write("abc", {"status": "complete", "run_id": "abc", "spec": {}, "metrics": {"overall": {}}},
                    pd.DataFrame({"user": ["1"], "v": [0.1]}))
        assert {p.name: oct(p.stat().st_mode & 0o777) for p in store.run_dir("abc").iterdir()} == {
            "record.json": "0o644", "per_user.csv.gz": "0o644"}
        os.umask(0o077)
        atomic_write(tmp_path / "private.txt", lambda fh: fh.write(b"x"))
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
        atomic_write(tmp_path / "given.txt", lambda fh: fh.write(b"x"), mode=0o640)
        assert (tmp_path / "given.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


@pytest.mark.parametrize("keep", [False, True])
def test_verify_removes_its_temporary_scratch_folder_unless_kept(keep, tmp_path, monkeypatch, capsys):
    import tempfile

    from bench import executors, runner

    def fake_run(spec, store, *args):
        store.write(spec.run_id, {"status": "complete", "run_id": spec.run_id, "spec": spec.model_dump(mode="json"),
                                  "metrics": {"overall": {"ndcg@10": 0.5}}},
                    pd.DataFrame({"user": ["1"], "ndcg@10": [0.5]}))

    monkeypatch.setattr(runner, "_execute_locked", fake_run)
    monkeypatch.setattr(executors, "prepare_shared", lambda *a, **k: None)
    results = tmp_path / "results"
    assert main(["run", "--suite", "smoke", "--results", str(results), "--no-table"]) == 0
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    argv = ["verify", "--suite", "smoke", "--all", "--results", str(results), "--cache", str(tmp_path / "c")]
    assert main([*argv, *(["--keep"] if keep else [])]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 rerun runs bit-identical" in out
    assert len(list(scratch_root.glob("bench-verify-*"))) == (1 if keep else 0)
    assert ("removed; --keep keeps it" in out) is not keep
