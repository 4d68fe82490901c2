"""Bad input exits 2 with one line naming the layer, key, value and what is valid, before any work;
records that are not complete are moved aside and redone; tables name a bad record and skip it."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from bench.cli import main

BAD = [
    (["--set", "backbone.learning_rate=abc"], "backbone 'lightgcn': setting learning_rate='abc'", "number > 0"),
    (["--set", "backbone.embedding_size=0"], "setting embedding_size=0", "integer >= 1"),
    (["--set", "backbone.epochs=-1"], "setting epochs=-1", "integer >= 1"),
    (["--set", "split.cold_user_threshold=abc"], "split 'temporal_loo'", "cold_user_threshold"),
    (["--set", "split.seed=abc"], "split 'temporal_loo'", "seed"),
    (["--set", "method.popular_fraction=2"], "method 'llminit-var': setting popular_fraction=2", "<= 1"),
    (["--set", "method.user_init=bogus"], "setting user_init='bogus'", "'mean', 'max', 'propagation'"),
    (["--set", "encoder.batch_size=abc"], "encoder 'minilm'", "batch_size"),
    (["--device", "tpu"], "run option device='tpu'", "cpu, cuda, cuda:N, mps"),
    (["--seeds", "0"], "--seeds 0", ">= 1"),
    (["--workers", "0"], "--workers 0", ">= 1"),
    (["--threads", "0"], "run option threads=0", ""),
    (["--option", "nope=1"], "unknown run option 'nope'", "eval_batch_size"),
]


@pytest.mark.parametrize("extra,first,valid", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_value_exits_2_with_one_line_before_any_work(extra, first, valid, tmp_path, capsys, monkeypatch):
    import bench.executors

    monkeypatch.setattr(bench.executors, "run_specs", lambda *a, **k: pytest.fail("work started"))
    code = main(["run", "--suite", "smoke", "--results", str(tmp_path), "--cache", str(tmp_path), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert first in err and valid in err, err
    assert not any(tmp_path.iterdir())  # nothing written


def test_method_on_a_backbone_it_does_not_run_is_refused_when_the_suite_expands(tmp_path, capsys):
    code = main(["run", "--dataset", "ml-100k", "--split", "temporal_loo", "--backbone", "lightgcn",
                 "--method", "seq-text", "--results", str(tmp_path), "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "does not run on backbone 'lightgcn'" in err and "sasrec" in err


def _complete_record(store, spec):
    from bench.records import ResultStore

    assert isinstance(store, ResultStore)
    per_user = pd.DataFrame({"user": ["1", "2"], "ndcg@10": [0.5, 0.0]})
    store.write(spec.run_id, {"status": "complete", "run_id": spec.run_id, "spec": spec.model_dump(mode="json"),
                              "metrics": {"overall": {"ndcg@10": 0.25}}}, per_user)


@pytest.mark.parametrize("damage", ["truncated", "empty", "old_schema", "no_sidecar", "failed_status"])
def test_an_incomplete_record_is_moved_aside_and_the_run_redone(damage, tmp_path, monkeypatch):
    from bench import runner
    from bench.records import ResultStore
    from bench.spec import expand, load_suite

    spec = expand(load_suite("smoke"))[0]
    store = ResultStore(tmp_path)
    _complete_record(store, spec)
    assert store.has(spec.run_id)
    path = store.record_path(spec.run_id)
    if damage == "truncated":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    elif damage == "empty":
        path.write_text("")
    elif damage == "old_schema":
        path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 1}))
    elif damage == "failed_status":
        path.write_text(json.dumps({**json.loads(path.read_text()), "status": "running"}))
    else:
        (path.parent / "per_user.csv.gz").unlink()
    assert not store.has(spec.run_id) and store.problem(spec.run_id) != "no record"
    redone = []
    monkeypatch.setattr(runner, "_execute_locked",
                        lambda spec, store, *a: (redone.append(spec.run_id), _complete_record(store, spec)))
    runner.execute(spec, store, tmp_path)
    assert redone == [spec.run_id] and store.has(spec.run_id)
    kept = list((tmp_path / ".quarantine").glob(f"{spec.run_id}-*"))
    assert len(kept) == 1 and (kept[0] / "reason.txt").read_text().strip()
    assert (kept[0] / "record.json").exists()


def test_tables_name_a_bad_record_and_skip_it(tmp_path, capsys):
    from bench.records import ResultStore
    from bench.report.tables import write_tables
    from bench.spec import expand, load_suite

    suite = load_suite("smoke")
    specs = expand(suite)
    store = ResultStore(tmp_path)
    store.record_path(specs[0].run_id).parent.mkdir(parents=True)
    store.record_path(specs[0].run_id).write_text('{"status": "compl')
    written = write_tables(suite, specs, store, tmp_path)
    assert written == {}
    err = capsys.readouterr().err
    assert f"skipping {store.record_path(specs[0].run_id)}: unreadable record" in err
    assert store.records() == []


def test_sidecar_bytes_are_reproducible(tmp_path):
    from bench.records import atomic_write_frame

    frame = pd.DataFrame({"user": ["1", "2"], "ndcg@10": [0.1, 0.2]})
    atomic_write_frame(tmp_path / "a.csv.gz", frame)
    atomic_write_frame(tmp_path / "b" / "other-name.csv.gz", frame)
    first, second = (tmp_path / "a.csv.gz").read_bytes(), (tmp_path / "b" / "other-name.csv.gz").read_bytes()
    assert first == second
    assert pd.read_csv(tmp_path / "a.csv.gz", dtype={"user": str}).equals(frame)
    assert gzip.decompress(first).decode().startswith("user,ndcg@10")
