"""bench.executors: interrupts stop every run and leave nothing behind, torch threads are set explicitly,
and a run's output goes to its log, not the terminal.

Runs are faked (tests/executor_child.py): the executors only read a spec's run id, seed and label."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
import pytest
from filelock import FileLock

from bench import executors
from bench.options import RunOptions
from bench.records import ResultStore
from tests.executor_child import fake_specs

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).with_name("executor_child.py")


def _start(root: Path, workers: int, n: int, sleep: float, executor: str = "local", fast: int = 0,
           grandchild: bool = False) -> subprocess.Popen:
    """The child in a session of its own: os.killpg(child.pid, SIGINT) is a terminal's Ctrl-C."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "EXECUTOR_CHILD_SLEEP": str(sleep),
           "EXECUTOR_CHILD_FAST": str(fast), "EXECUTOR_CHILD_GRANDCHILD": "1" if grandchild else "0"}
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.out", "ab") as out:
        return subprocess.Popen([sys.executable, str(CHILD), str(root), str(workers), str(n), executor],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _output(root: Path) -> str:
    return (root.parent / f"{root.name}.out").read_text(errors="replace")


def _wait_until(condition, proc: subprocess.Popen, root: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"child exited early ({proc.returncode}):\n{_output(root)}"
        assert time.monotonic() < deadline, f"timed out:\n{_output(root)}"
        time.sleep(0.1)


def _records(root: Path) -> list[Path]:
    return sorted(root.glob("runs/*/record.json"))


def _started(root: Path) -> dict[str, dict]:
    out = {}
    for path in root.glob("started/*.json"):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):  # being written
            continue
    return out


def _alive(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    out = []
    for proc in alive:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            continue
    return out


def _kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            continue


def _assert_store_clean(root: Path, folders_cleared: bool = True) -> int:
    """Every record complete and whole, no run folder without its record (a stopped run's is cleared;
    `folders_cleared` False: the parent was SIGKILLed, so nothing could clear them), no temp file, no lock
    held; returns the number of records."""
    records = _records(root)
    if folders_cleared:
        assert {p.parent for p in records} == set(root.glob("runs/*")), sorted(root.glob("runs/*/*"))
    for path in records:
        assert json.loads(path.read_text())["status"] == "complete"
    assert not list(root.glob("runs/*/.*.tmp"))
    for lock in root.glob(".locks/*.lock"):
        held = FileLock(str(lock), timeout=0)
        held.acquire()  # raises Timeout while any process still holds it
        held.release()
    return len(records)


@pytest.mark.parametrize(("sig", "rerun_workers"), [(signal.SIGINT, 2), (signal.SIGTERM, 1)],
                         ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_pool_workers_and_the_rerun_resumes(tmp_path, sig, rerun_workers):
    root, n = tmp_path / "results", 6
    proc = _start(root, workers=2, n=n, sleep=60, fast=2, grandchild=True)
    processes: list[psutil.Process] = []
    try:
        # the two fast runs done, the next two running (each with a child of its own)
        _wait_until(lambda: len(_records(root)) == 2 and len(_started(root)) == 4, proc, root)
        processes = psutil.Process(proc.pid).children(recursive=True)
        assert len(processes) >= 4  # 2 workers, 2 grandchildren (and multiprocessing's resource tracker)
        sent = time.monotonic()
        if sig == signal.SIGINT:  # Ctrl-C: to the whole foreground process group
            os.killpg(proc.pid, sig)
        else:  # kill PID
            proc.send_signal(sig)
        assert proc.wait(timeout=20) == 130, _output(root)
        assert time.monotonic() - sent < 10
        assert _alive(processes, timeout=5) == []
    finally:
        proc.kill()
        _kill(processes)
    assert _assert_store_clean(root) == 2  # the interrupted runs left no record, and hold no lock
    first = {p.parent.name for p in _records(root)}

    rerun = _start(root, workers=rerun_workers, n=n, sleep=0.1)
    assert rerun.wait(timeout=120) == 0, _output(root)
    summary = json.loads(_output(root).strip().splitlines()[-1])
    assert summary == {"total": n, "skipped": 2, "done": n - 2, "failed": {}}
    assert _assert_store_clean(root) == n
    threads = {p.parent.name: json.loads(p.read_text())["threads"] for p in _records(root)}
    for run_id, count in threads.items():  # set in every worker, and in-process
        assert count == RunOptions().torch_threads(2 if run_id in first else rerun_workers)


def test_workers_die_with_a_killed_parent(tmp_path):
    root = tmp_path / "results"
    proc = _start(root, workers=2, n=4, sleep=60)
    workers: list[psutil.Process] = []
    try:
        _wait_until(lambda: len(_started(root)) >= 2, proc, root)
        pids = {marker["pid"] for marker in _started(root).values()}
        workers = [p for p in psutil.Process(proc.pid).children() if p.pid in pids]
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert _alive(workers, timeout=5) == []  # PR_SET_PDEATHSIG
    finally:
        proc.kill()
        _kill(workers)
    # the dead workers hold no lock (their run folders stay: the next attempt of each run wipes its work/)
    assert _assert_store_clean(root, folders_cleared=False) == 0


@pytest.mark.slow
def test_interrupt_cancels_ray_tasks_and_shuts_down_ray(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed")
    root = tmp_path / "results"
    proc = _start(root, workers=1, n=4, sleep=60, executor="ray", grandchild=True)
    processes: list[psutil.Process] = []
    try:
        _wait_until(lambda: len(_started(root)) >= 1, proc, root, timeout=180)
        processes = psutil.Process(proc.pid).children(recursive=True)  # Ray's processes, its tasks
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, _output(root)
        assert _alive(processes, timeout=10) == []
    finally:
        proc.kill()
        _kill(processes)
    assert _assert_store_clean(root) == 0


# --- in this process ---------------------------------------------------------------------------------

@pytest.fixture
def fake_runs(monkeypatch):
    """`execute` replaced by `behaviour(spec, store)` (then a record is written); no shared preparation."""
    import pandas as pd

    calls = {}

    def install(behaviour):
        def execute(spec, store, cache_dir, options, requested):
            with store.lock(spec.run_id):
                behaviour(spec, store)
                store.write(spec.run_id, {"status": "complete", "run_id": spec.run_id, "spec": {},
                                          "metrics": {"overall": {}}},
                            pd.DataFrame({"user": ["1"]}))

        monkeypatch.setattr(executors, "execute", execute)

    monkeypatch.setattr(executors, "prepare_shared", lambda *a, **k: None)
    return install, calls


@pytest.mark.parametrize("threads", [None, 3])
def test_in_process_runs_set_torch_threads_and_restore_them(tmp_path, fake_runs, threads):
    import torch

    install, calls = fake_runs
    install(lambda spec, store: calls.setdefault("threads", torch.get_num_threads()))
    before = torch.get_num_threads()
    options = RunOptions(threads=threads, progress=False)
    summary = executors.run_specs(fake_specs(1), ResultStore(tmp_path), tmp_path, options)
    assert summary["done"] == 1
    assert calls["threads"] == options.torch_threads(1) == (threads or os.cpu_count())
    assert torch.get_num_threads() == before


def test_run_output_goes_to_its_log_not_the_terminal(tmp_path, fake_runs, capfd):
    install, _ = fake_runs

    def noisy(spec, store):
        print(f"stdout of {spec.run_id}")
        warnings.warn(f"warning of {spec.run_id}", UserWarning, stacklevel=1)
        logging.getLogger("recbole").warning(f"recbole of {spec.run_id}")
        logging.getLogger("transformers").warning(f"transformers of {spec.run_id}")
        logging.getLogger().info(f"root info of {spec.run_id}")
        sys.stderr.write(f"stderr of {spec.run_id}\n")
        os.write(2, f"fd 2 of {spec.run_id}\n".encode())
        if spec.seed == 1:
            raise RuntimeError(f"boom in {spec.run_id}")

    install(noisy)
    root_handlers, showwarning, stdout = logging.getLogger().handlers[:], warnings.showwarning, sys.stdout
    specs = fake_specs(2)
    summary = executors.run_specs(specs, ResultStore(tmp_path), tmp_path, RunOptions(progress=True))
    out, err = capfd.readouterr()
    assert summary["done"] == 1 and list(summary["failed"]) == [specs[1].label]
    for spec in specs:
        log = executors.run_log_path(tmp_path, spec.run_id).read_text()
        for what in ("stdout", "warning", "recbole", "transformers", "root info", "stderr", "fd 2"):
            assert f"{what} of {spec.run_id}" in log
            assert f"{what} of {spec.run_id}" not in out + err
    failed_log = executors.run_log_path(tmp_path.resolve(), specs[1].run_id)
    assert "Traceback" in failed_log.read_text()
    assert f"FAILED {specs[1].label}: RuntimeError: boom in {specs[1].run_id} (log: {failed_log})" in err
    assert "fake0001" not in out and specs[1].label in err  # the bar's postfix, on stderr
    assert not (tmp_path / "runs" / specs[0].run_id / "error.txt").exists()
    assert (tmp_path / "runs" / specs[1].run_id / "error.txt").exists()
    # everything restored
    assert logging.getLogger().handlers == root_handlers and warnings.showwarning is showwarning
    assert sys.stdout is stdout
    print("after the runs")
    os.write(2, b"fd 2 after the runs\n")
    out, err = capfd.readouterr()
    assert "after the runs" in out and "fd 2 after the runs" in err


def test_sigterm_in_process_stops_the_run_and_what_it_started(tmp_path, fake_runs):
    install, calls = fake_runs

    def terminated(spec, store):
        (store.run_dir(spec.run_id) / "work").mkdir(parents=True)
        calls["child"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # interrupted by the signal
        raise AssertionError("not interrupted")

    install(terminated)
    handler = signal.getsignal(signal.SIGTERM)
    store = ResultStore(tmp_path)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        executors.run_specs(fake_specs(2), store, tmp_path, RunOptions(progress=False))
    assert time.monotonic() - started < 10
    assert calls["child"].wait(timeout=5) is not None  # terminated, not left running
    assert signal.getsignal(signal.SIGTERM) is handler
    assert _assert_store_clean(tmp_path) == 0
    spec = fake_specs(1)[0]
    assert "interrupted" in executors.run_log_path(tmp_path, spec.run_id).read_text()
    assert not (tmp_path / "runs" / spec.run_id / "error.txt").exists()


def test_discard_unfinished_clears_only_stopped_runs(tmp_path):
    import pandas as pd

    store = ResultStore(tmp_path)
    for run_id in ("done", "stopped", "failed_before", "running"):
        (store.run_dir(run_id) / "work").mkdir(parents=True)
        (store.run_dir(run_id) / "work" / "checkpoint.pth").write_text("partial")
    store.write("done", {"status": "complete", "run_id": "done", "spec": {}, "metrics": {"overall": {}}},
                pd.DataFrame({"user": ["1"]}))
    (store.run_dir("stopped") / "per_user.csv.gz").write_text("sidecar written before the record")
    (store.run_dir("failed_before") / "error.txt").write_text("an earlier attempt's traceback")
    with store.lock("running"):  # another process is still running it
        cleaned = store.discard_unfinished(["done", "stopped", "failed_before", "running", "never_started"])
    assert cleaned == ["stopped", "failed_before"]
    assert not store.run_dir("stopped").exists()
    assert [p.name for p in store.run_dir("failed_before").iterdir()] == ["error.txt"]
    assert (store.run_dir("running") / "work" / "checkpoint.pth").exists()
    assert store.has("done") and (store.run_dir("done") / "work").exists()  # a complete run is not touched


# ------------------------------------------------------------------ issue 25: notices, counts, error.txt, locks
def test_notices_reach_the_terminal_once_and_the_log(tmp_path, fake_runs, capfd, monkeypatch):
    """A `bench: ...` line a run (or the shared preparation) writes to stderr goes to its log and, once per
    distinct line, to the terminal; other output stays in the log."""
    install, _ = fake_runs

    def noisy(spec, store):
        print(f"bench: cache: /c/{spec.run_id}.npy: sha256 does not match; re-encoding", file=sys.stderr)
        print("bench: dataset 'tiny': 2 items without text (policy: placeholder); first ids: 1, 2", file=sys.stderr)
        print("not a notice", file=sys.stderr)

    install(noisy)
    monkeypatch.setattr(executors, "prepare_shared", lambda *a, **k: print(
        "bench: cache: /c/datasets/x: dataset cache does not match; rebuilding", file=sys.stderr))
    specs = fake_specs(2)
    executors.run_specs(specs, ResultStore(tmp_path), tmp_path, RunOptions(progress=False))
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("bench: ")]
    assert lines[0] == "bench: cache: /c/datasets/x: dataset cache does not match; rebuilding"
    for spec in specs:
        assert f"bench: cache: /c/{spec.run_id}.npy: sha256 does not match; re-encoding" in lines
        assert f"/c/{spec.run_id}.npy" in executors.run_log_path(tmp_path, spec.run_id).read_text()
    assert lines.count("bench: dataset 'tiny': 2 items without text (policy: placeholder); first ids: 1, 2") == 1
    assert "not a notice" not in err
    assert "rebuilding" in executors.run_log_path(tmp_path, "prepare").read_text()


def test_a_run_another_process_completed_counts_as_skipped_not_done(tmp_path, monkeypatch):
    """Two `bench run`s of one suite: the run the other process finished while this one prepared is skipped."""
    import pandas as pd

    from bench.spec import expand, load_suite

    spec = expand(load_suite("smoke"))[0]
    store = ResultStore(tmp_path)

    def other_process_finishes(*args, **kwargs):
        store.write(spec.run_id, {"status": "complete", "run_id": spec.run_id, "spec": spec.model_dump(mode="json"),
                                  "metrics": {"overall": {}}}, pd.DataFrame({"user": ["1"]}))

    monkeypatch.setattr(executors, "prepare_shared", other_process_finishes)
    summary = executors.run_specs([spec], store, tmp_path, RunOptions(progress=False))
    assert summary == {"total": 1, "skipped": 1, "done": 0, "failed": {}}


def test_error_txt_is_whole_or_absent(tmp_path, monkeypatch):
    """A full disk while writing error.txt leaves no empty error.txt (the log says why)."""
    import errno

    spec = fake_specs(1)[0]

    def boom(*args):
        raise RuntimeError("the run failed")

    def full(path, text, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(executors, "execute", boom)
    monkeypatch.setattr(executors, "atomic_write_text", full)
    result = executors._execute_safely(spec, str(tmp_path), str(tmp_path), RunOptions(), {})
    assert result[0] == spec.run_id and "the run failed" in result[1] and result.ran
    assert not (tmp_path / "runs" / spec.run_id / "error.txt").exists()
    assert "No space left on device" in executors.run_log_path(tmp_path, spec.run_id).read_text()
    monkeypatch.undo()
    monkeypatch.setattr(executors, "execute", boom)
    executors._execute_safely(spec, str(tmp_path), str(tmp_path), RunOptions(), {})
    assert "the run failed" in (tmp_path / "runs" / spec.run_id / "error.txt").read_text()


def test_run_results_pickle_with_their_notices():
    import pickle

    result = executors.RunResult("abc", None, ["bench: cache: x; rebuilding"], ran=False)
    back = pickle.loads(pickle.dumps(result))
    assert back == ("abc", None) and back.notices == ["bench: cache: x; rebuilding"] and back.ran is False
    run_id, error = back
    assert (run_id, error) == ("abc", None)


def test_two_processes_needing_the_same_embeddings_encode_them_once(tmp_path):
    import threading

    import numpy as np
    import pandas as pd

    from bench.encoders import Encoder, encode_items

    calls = []

    class Slow(Encoder):
        def __init__(self):
            self.name, self.batch_size = "slow", 4

        def fingerprint(self):
            return "slow-encoder"

        @property
        def dim(self):
            return 3

        def _encode(self, texts, batch_size, progress):
            calls.append(len(texts))
            time.sleep(0.5)
            return np.ones((len(texts), 3))

    text = pd.Series(["a", "b"], index=["1", "2"])
    hits = []
    threads = [threading.Thread(target=lambda: hits.append(encode_items(Slow(), text, "{title}", tmp_path,
                                                                        progress=False)[1]["cache_hit"]))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [2] and sorted(hits) == [False, True]


def test_a_check_of_the_prepared_data_fails_before_any_run(tmp_path, monkeypatch):
    """bench.runner.preflight with `data`: a method's `check_data` runs after the shared preparation and before
    any run; its BenchError stops the suite (exit 2 in the CLI)."""
    from bench import runner
    from bench.data.splits import make_split, resolve_split_params
    from bench.errors import BenchError
    from bench.spec import expand, load_suite
    from methods.classic import RandomInit
    from tests.conftest import make_dataset

    spec = next(s for s in expand(load_suite("smoke")) if s.method == "random")
    dataset = make_dataset()
    split = make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    monkeypatch.setattr(runner, "_dataset", lambda spec, cache_dir: dataset)
    monkeypatch.setattr(runner, "_split", lambda spec, data, cache_dir: split)

    def check_data(self, data, cache_dir):
        raise BenchError(f"method {self.name!r}: {len(data.item_ids)} items, too few")

    monkeypatch.setattr(RandomInit, "check_data", check_data, raising=False)
    monkeypatch.setattr(executors, "execute", lambda *a: pytest.fail("a run started"))
    with pytest.raises(BenchError, match="method 'random': 40 items, too few"):
        executors.run_specs([spec], ResultStore(tmp_path), tmp_path, RunOptions(progress=False))
