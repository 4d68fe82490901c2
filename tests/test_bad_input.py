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
    # upper bounds, finite numbers, no booleans for numbers (issue 25, item 3): central in bench.settings
    (["--set", "backbone.embedding_size=1e8"], "setting embedding_size=100000000.0: must be <= 16384",
     "integer >= 1 and <= 16384"),
    (["--set", "backbone.learning_rate=.inf"], "setting learning_rate=inf: must be a finite number", "number > 0"),
    (["--set", "backbone.epochs=true"], "setting epochs=True: a number is needed, not true / false", "integer >= 1"),
    (["--set", "method.popular_fraction=false"], "setting popular_fraction=False: a number is needed", "<= 1"),
    (["--set", "split.seed=1e10"], "setting seed=10000000000.0: must be <= 2147483647", "integer >= 0"),
    (["--seeds", "1000000"], "--seeds 1000000: must be <= 1000", ""),
    (["--extra-seeds", "100000"], "--extra-seeds 100000: must be <= 1000", ""),
    (["--workers", "100000"], "--workers 100000: must be <= 1024", ""),
    (["--threads", "100000"], "run option threads=100000", "4096"),
    (["--option", "eval_batch_size=true"], "run option eval_batch_size=True", "not true / false"),
    (["--set", "encoder.path=/nonexistent/model"], "encoder 'minilm' setting path='/nonexistent/model'",
     "no such file or folder"),
    # a value that is not valid YAML (issue 27.4): one line naming it, not the YAML parser's traceback
    (["--set", "dataset.path=[a"], "--set dataset.path='[a': not a valid value", "is quoted"),
    (["--option", "progress={"], "--option progress='{': not a valid value", "is quoted"),
    # the builtin card reads its own files only (issue 27.4): other data is --dataset PATH
    (["--set", "dataset.loader=atomic", "--set", "dataset.path=/tmp"], "dataset 'ml-100k' setting loader='atomic'",
     "--dataset PATH"),
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


# ------------------------------------------------------------------ issue 25: every check before any work
def _no_work(monkeypatch):
    import bench.executors

    monkeypatch.setattr(bench.executors, "run_specs", lambda *a, **k: pytest.fail("work started"))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _smoke(tmp_path, *extra):
    return main(["run", "--suite", "smoke", "--results", str(tmp_path / "results"), "--cache",
                 str(tmp_path / "cache"), *extra])


def test_a_suite_name_is_a_folder_name_never_a_path(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    suite = tmp_path / "escape.yaml"
    suite.write_text("name: ../../x\ndatasets: [ml-100k]\nsplits: [temporal_loo]\nbackbones: [mf]\n"
                     "methods: [random]\n")
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path / "r")]) == 2
    err = _one_line_error(capsys)
    assert "invalid suite file: name:" in err and "'../../x'" in err
    suite.write_text("name: ok\ndatasets: [ml-100k]\nsplits: [temporal_loo]\nbackbones: [mf]\nmethods: [random]\n"
                     "profiles: {'a/b': {seeds: [1]}}\n")
    assert main(["table", "--suite", str(suite), "--results", str(tmp_path / "r")]) == 2
    assert "profile name 'a/b'" in _one_line_error(capsys)
    assert not (tmp_path / "r").exists() and not (tmp_path.parent / "x").exists()


def test_a_missing_suite_file_is_named_as_a_file(tmp_path, capsys):
    assert main(["run", "--suite", str(tmp_path / "nope.yaml"), "--results", str(tmp_path)]) == 2
    assert f"no such suite file: {tmp_path / 'nope.yaml'}" in _one_line_error(capsys)
    assert main(["run", "--suite", "smok", "--results", str(tmp_path)]) == 2
    assert "unknown suite 'smok'; did you mean 'smoke'?" in _one_line_error(capsys)


def test_a_suite_file_that_is_not_utf8_names_line_and_column(tmp_path, capsys):
    suite = tmp_path / "latin1.yaml"
    suite.write_bytes(b"name: s\n# r\xe9sum\xe9\n")
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path)]) == 2
    assert f"{suite}, line 2, column 4: suite file is not UTF-8 text (byte 0xe9)" in _one_line_error(capsys)


def test_a_suite_file_error_is_one_line(tmp_path, capsys):
    suite = tmp_path / "bad.yaml"
    suite.write_text("name: s\ndatasets: ml-100k\nsplits: [temporal_loo]\nbackbones: [mf]\nmethods: [random]\n"
                     "seeds: [0, -1]\nbogus: 1\n")
    assert main(["run", "--suite", str(suite), "--results", str(tmp_path)]) == 2
    err = _one_line_error(capsys)
    assert "invalid suite file: datasets: Input should be a valid list" in err and "more problem" in err


def test_an_encoder_path_that_is_no_model_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "README.txt").write_text("nothing to load")
    assert _smoke(tmp_path, "--set", f"encoder.path={folder}") == 2
    err = _one_line_error(capsys)
    assert f"encoder 'minilm' setting path='{folder}': not a model folder (no config.json or modules.json" in err


def test_a_dangling_link_in_a_data_folder_is_named(tmp_path, capsys, monkeypatch):
    from bench.data.cards import load_card, source_files

    _no_work(monkeypatch)
    data = tmp_path / "data"
    data.mkdir()
    for path in source_files(load_card("ml-100k")).values():
        (data / path.name).symlink_to(path)
    (data / "notes.txt").symlink_to(tmp_path / "gone.txt")
    assert _smoke(tmp_path, "--set", f"dataset.path={data}") == 2
    err = _one_line_error(capsys)
    assert f"{data / 'notes.txt'} is a dangling symbolic link" in err and "gone.txt" in err


def test_identical_answer_tokens_are_refused_when_the_suite_expands(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    argv = ["run", "--dataset", "ml-100k", "--split", "ctr_temporal", "--backbone", "none", "--method", "icl",
            "--results", str(tmp_path / "r"), "--cache", str(tmp_path / "c")]
    assert main([*argv, "--set", 'method.answer_tokens=[" Yes", " Yes"]']) == 2
    assert "the Yes and No answers must differ" in _one_line_error(capsys)
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    assert main([*argv, "--set", f"method.base_model={folder}"]) == 2
    assert f"method 'icl' setting base_model='{folder}': not a model folder" in _one_line_error(capsys)
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


# ------------------------------------------------------------------ unwritable or full folders
@pytest.mark.parametrize("fault", ["read-only", "full", "file", "minimum"])
def test_an_unwritable_or_full_results_folder_is_one_line_before_any_work(fault, tmp_path, capsys, monkeypatch):
    import errno
    import os
    import shutil

    _no_work(monkeypatch)
    results = tmp_path / "results"
    if fault == "read-only":
        def fsync(fd):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(os, "fsync", fsync)
        expected = "--results {}: the results folder is not writable (Read-only file system)"
    elif fault == "full":
        usage = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=3 * 2**20))
        expected = "--results {}: the results folder's file system has 3.0 MiB free; bench needs at least 64 MiB"
    elif fault == "file":
        results.write_text("a file")
        expected = "--results {}: the results folder is a file, not a folder"
    else:
        monkeypatch.setenv("BENCH_MIN_FREE_MB", str(10**12))
        expected = "--results {}: the results folder's file system has"
    assert _smoke(tmp_path) == 2
    err = _one_line_error(capsys)
    assert expected.format(results) in err, err
    assert not list(results.glob(".bench-probe*")) if results.is_dir() else True
    assert not (tmp_path / "cache").exists()  # the results folder is checked first; the cache not touched


def test_a_read_only_cache_folder_is_one_line(tmp_path, capsys, monkeypatch):
    import errno
    from pathlib import Path

    _no_work(monkeypatch)
    real = open

    def guarded(path, *args, **kwargs):
        if Path(str(path)).parent.name == "cache" and ".bench-probe" in str(path):
            raise OSError(errno.EACCES, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded)
    assert _smoke(tmp_path) == 2
    assert f"--cache {tmp_path / 'cache'}: the cache folder is not writable (Permission denied)" in \
        _one_line_error(capsys)


def test_a_folder_that_fails_mid_run_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    import errno

    import bench.executors

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "results" / "x" / "record.json"))

    monkeypatch.setattr(bench.executors, "run_specs", full)
    assert _smoke(tmp_path, "--no-table") == 2
    err = _one_line_error(capsys)
    assert "record.json: No space left on device" in err and "Traceback" not in err


# ------------------------------------------------------------------ Markdown cells
def test_markdown_cells_and_headers_escape_pipes_and_line_breaks():
    from bench.report.tables import render

    table = pd.DataFrame({"method": ["random", "llminit|var", "two\nlines"], "ndcg|10": [0.1, 0.2, 0.3],
                          "n": [1, 2, 3]})
    text = render(table, "markdown")
    lines = text.splitlines()
    assert len(lines) == 5
    import re

    borders = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
    assert borders == {4}, text
    assert "llminit\\|var" in text and "two<br>lines" in text and "ndcg\\|10" in text
    plain = pd.DataFrame({"method": ["a", "b"], "ndcg@10": [0.1, 0.2]})
    assert render(plain, "markdown") == plain.to_markdown(index=False)
