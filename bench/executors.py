"""Executors: run pending RunSpecs in this process, a local process pool, or one Ray task per run.

Shared cached artifacts (dataset, split, text embeddings) are prepared once in the parent first
(`bench.runner.prepare_shared`); each run then goes through `bench.runner.execute`.

Console: the terminal shows one suite progress bar, one line per failed run and one line per notice. Everything a
run writes (warnings, RecBole / transformers logging, prints, inner progress bars) goes to its log,
`<results>/logs/<run_id>.log` (git-ignored; `run_log_path`). A notice is a line the harness itself writes to
stderr starting with `bench: ` (a cache rebuilt, items without text, a record quarantined): it goes to the log
and, collected from the captured stream (in this process, a pool worker or a Ray task alike) and sent back with
the run's result, to the terminal too, once per distinct line.

Interrupts: SIGINT or SIGTERM to the process running `run_specs` cancels the pending runs, stops the
running ones (pool workers and their children are terminated, Ray tasks force-cancelled) and raises
KeyboardInterrupt. Records are written atomically, record last, so a stopped run leaves no record and
the rerun resumes; the stopped runs' folders (RecBole's work/, early sidecars) are then cleared. Pool
workers also die with their parent (Linux: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import runner as _runner
from bench.options import RunOptions
from bench.progress import ProgressWatcher, progress_path
from bench.records import ResultStore, atomic_write_text
from bench.runner import execute, prepare_shared
from bench.spec import RunSpec

# loggers of the libraries a run uses; during a run their own handlers are detached, so they reach the log
LIBRARY_LOGGERS = ("recbole", "transformers", "sentence_transformers", "huggingface_hub", "peft",
                   "accelerate", "datasets", "torch", "py.warnings")
STOP_GRACE_S = 3.0  # seconds a stopped worker gets after SIGTERM before SIGKILL
PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 1.0  # how often the bar shows the runs' in-run progress (bench.progress)
NOTICE_PREFIX = "bench: "  # a line the harness writes to stderr for the user: it also reaches the terminal


class RunResult(tuple):
    """What one run sends back: it compares and unpacks as (run_id, error) (error None: the run succeeded), with
    `notices` (the run's `bench: ...` lines, for the terminal) and `ran` (False: the run was found complete, e.g.
    another process finished it first, so it is counted as skipped, not done)."""

    def __new__(cls, run_id: str, error: str | None, notices=(), ran: bool = True):
        self = super().__new__(cls, (run_id, error))
        self.notices, self.ran = list(notices), bool(ran)
        return self

    def __reduce__(self):  # pool workers and Ray tasks send it back pickled
        return (RunResult, (self[0], self[1], self.notices, self.ran))


def run_log_path(root: Path | str, run_id: str) -> Path:
    """The log of one run: everything the run wrote, every attempt appended. Not inside the run folder's
    `work/` (wiped at the start of each attempt) and not in the run folder (committed): `logs/` is
    git-ignored."""
    return Path(root) / "logs" / f"{run_id}.log"


# --- signals -----------------------------------------------------------------------------------------

def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_interrupts():
    """For the duration: SIGTERM raises KeyboardInterrupt in the main thread (as SIGINT does)."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _signals_deferred():
    """SIGINT / SIGTERM arriving inside the block (cleanup that must not be cut half-way) are held and
    raised as KeyboardInterrupt when it ends."""
    if not _in_main_thread():
        yield
        return
    caught: list[int] = []
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler not in (signal.SIG_IGN, None):
            saved[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if caught:
            raise KeyboardInterrupt(f"signal {caught[0]}")


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies (even by SIGKILL). Then check the
    parent is still the one we were started by: it may have died before prctl took effect."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc / prctl: the parent stops us on interrupts only
            pass
    if os.getppid() != parent:
        os._exit(1)


def _init_run_process(threads: int) -> None:
    """Torch threads of this process; and, as it runs nothing but runs, no transformers /
    huggingface_hub progress bars (imported later, they start disabled)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch

    torch.set_num_threads(threads)


def _worker_init(threads: int, parent: int | None = None) -> None:
    """Pool worker: torch threads; SIGINT ignored (the parent decides, and stops the workers); own process
    group (the parent stops a worker with everything it started); dies with the parent."""
    if parent is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with contextlib.suppress(OSError, AttributeError):
            os.setpgid(0, 0)
        _die_with_parent(parent)
    _init_run_process(threads)


def _descendants(pids: list[int]) -> list:
    """psutil handles of every descendant of `pids` (listed before any of them is stopped)."""
    import psutil

    found = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for proc in psutil.Process(pid).children(recursive=True):
                found[proc.pid] = proc
    return list(found.values())


def _signal_group(pid: int, sig: int) -> None:
    """`sig` to the process group `pid` leads (a pool worker's), else to `pid` alone."""
    with contextlib.suppress(OSError, AttributeError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    with contextlib.suppress(OSError):
        os.kill(pid, sig)


def _stop_processes(children: list, others: list, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM, then after `grace` seconds SIGKILL: `children` (multiprocessing processes of this one, with
    their process groups; waited for by multiprocessing, which must reap them itself) and `others`
    (psutil handles, e.g. their descendants)."""
    import time

    import psutil

    for child in children:
        _signal_group(child.pid, signal.SIGTERM)
    for proc in others:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    deadline = time.monotonic() + grace
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
    _, alive = psutil.wait_procs(others, timeout=max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.is_alive():
            _signal_group(child.pid, signal.SIGKILL)
            child.join(grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the pool's pending runs and terminate its workers, and what they started, now (not after
    their running runs)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    _stop_processes(processes, _descendants([p.pid for p in processes if p.pid]))
    if manager is not None:  # it notices the dead workers and ends; joined here, not at interpreter exit
        manager.join(timeout=STOP_GRACE_S)


def _new_children(before: set[int]) -> list:
    """psutil handles of the children of this process not in `before` (and not multiprocessing's
    resource tracker), with their descendants."""
    from multiprocessing import resource_tracker

    import psutil

    keep = before | {getattr(resource_tracker._resource_tracker, "_pid", None)}
    new = [p for p in psutil.Process().children() if p.pid not in keep]
    return new + _descendants([p.pid for p in new])


# --- one run, its output in its log ------------------------------------------------------------------

class _Forward(io.TextIOBase):
    """sys.stdout / sys.stderr during a run: writes go to the run log. Whatever kept a reference to it
    (a handler or bar created during the run) writes to the original stream once the run is over."""

    def __init__(self, target, original, notices: list | None = None):
        self.target, self.original = target, original
        self.notices, self._partial = notices, ""

    def _stream(self):
        if self.target is not None and not self.target.closed:
            return self.target
        return self.original

    def write(self, text: str) -> int:
        if self.notices is not None and isinstance(text, str):
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
            self.notices.extend(line for line in lines if line.startswith(NOTICE_PREFIX))
        stream = self._stream()
        if stream is None:
            return len(text)
        return stream.write(text)

    def flush(self) -> None:
        stream = self._stream()
        if stream is not None:
            stream.flush()

    def fileno(self) -> int:
        return self._stream().fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self):
        return getattr(self._stream(), "encoding", "utf-8")

    def writable(self) -> bool:
        return True


def _redirect_fd(fd: int, target: int) -> int | None:
    """Point file descriptor `fd` at `target`; the saved original, or None when `fd` is not open."""
    try:
        saved = os.dup(fd)
    except OSError:
        return None
    os.dup2(target, fd)
    return saved


@contextlib.contextmanager
def capture_run_output(path: Path, fds: bool = True, notices: list | None = None):
    """For the block: Python warnings, the root logger and the library loggers, sys.stdout / sys.stderr
    and (fds=True) file descriptors 1 and 2 all write to `path` (appended); transformers' progress bars
    are off. Everything is restored afterwards, also when an interrupt lands half-way. Yields the log.
    `notices`: a list that collects the `bench: ...` lines written to sys.stderr meanwhile (for the terminal)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    log.write(f"=== {datetime.now(timezone.utc).isoformat(timespec='seconds')} pid {os.getpid()}\n")
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved_loggers: dict[str, tuple[list, bool]] = {}
    saved_streams = (sys.stdout, sys.stderr)
    saved_fds: dict[int, int | None] = {}
    catcher = warnings.catch_warnings()
    bars, caught = None, False

    def showwarning(message, category, filename, lineno, file=None, line=None):
        with contextlib.suppress(ValueError, OSError):
            log.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        with _signals_deferred():  # an interrupt now is raised once all is in place, then undone below
            for name in LIBRARY_LOGGERS:
                logger = logging.getLogger(name)
                saved_loggers[name] = (logger.handlers[:], logger.propagate)
                logger.handlers = []
                logger.propagate = True
            root.handlers = [handler]
            root.setLevel(logging.INFO)
            bars = _transformers_bars(False)
            catcher.__enter__()
            caught = True
            warnings.showwarning = showwarning
            for stream in saved_streams:
                with contextlib.suppress(Exception):
                    stream.flush()
            if fds:
                for fd in (1, 2):
                    saved_fds[fd] = _redirect_fd(fd, log.fileno())
            sys.stdout = _Forward(log, saved_streams[0])
            sys.stderr = _Forward(log, saved_streams[1], notices)
        yield log
    finally:
        with _signals_deferred():
            for stream in (sys.stdout, sys.stderr, *saved_streams):
                with contextlib.suppress(Exception):
                    stream.flush()
            sys.stdout, sys.stderr = saved_streams
            for fd, saved in saved_fds.items():
                if saved is not None:
                    os.dup2(saved, fd)
                    os.close(saved)
            if caught:
                catcher.__exit__(None, None, None)
            _transformers_bars(bars)
            root.handlers = saved_root[0] + [h for h in root.handlers if h is not handler
                                             and h not in saved_root[0]]
            root.setLevel(saved_root[1])
            for name, (handlers, propagate) in saved_loggers.items():
                logger = logging.getLogger(name)
                logger.handlers = handlers + [h for h in logger.handlers if h not in handlers]
                logger.propagate = propagate
            handler.close()
            log.close()


def _transformers_bars(enabled: bool | None) -> bool | None:
    """Turn transformers' progress bars on or off (None: leave them); returns the previous state, None
    where transformers is not imported yet (importing it costs seconds; pool workers and Ray tasks set
    HF_HUB_DISABLE_PROGRESS_BARS instead, so a run that imports it starts with its bars off)."""
    if enabled is None or "transformers.utils.logging" not in sys.modules:
        return None
    try:
        from transformers.utils import logging as hf_logging

        previous = hf_logging.is_progress_bar_enabled()
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    except Exception:  # a broken install must not fail the run
        return None
    return previous


def _execute_safely(spec: RunSpec, root: str, cache_dir: str, options: RunOptions,
                    requested: dict) -> RunResult:
    """One run, its output in its log; RunResult (run_id, None) or (run_id, traceback), with the run's notices.
    Exceptions are reported per run (the suite goes on, a rerun retries); KeyboardInterrupt is not caught.
    error.txt is written whole or not at all (atomically; a full disk leaves none, the log and terminal say why)."""
    store = ResultStore(Path(root))
    error = None
    notices: list[str] = []
    _runner.SKIPPED.discard(spec.run_id)
    with capture_run_output(run_log_path(root, spec.run_id), notices=notices) as log:
        try:
            execute(spec, store, Path(cache_dir), options, requested)
        except Exception:
            error = traceback.format_exc()
            log.write(error)
        except BaseException as exc:
            log.write(f"interrupted: {exc!r}\n")
            raise
        path = store.run_dir(spec.run_id) / "error.txt"
        try:
            if error is None:
                path.unlink(missing_ok=True)  # a failed earlier try's
            else:
                atomic_write_text(path, error)
        except OSError as exc:
            log.write(f"cannot write {path}: {exc}\n")
    return RunResult(spec.run_id, error, notices, ran=spec.run_id not in _runner.SKIPPED)


def _ray_task(spec: RunSpec, root: str, cache_dir: str, options: RunOptions, requested: dict,
              threads: int) -> tuple[str, str | None]:
    _init_run_process(threads)
    return _execute_safely(spec, root, cache_dir, options, requested)


# --- executors ---------------------------------------------------------------------------------------

def task_resources(spec: RunSpec, cpus_per_task: float, cluster_gpus: float) -> dict[str, float]:
    """Ray resources of one run: `cpus_per_task` CPUs, plus what the method declares (class attribute
    `resources`, e.g. {"num_gpus": 1} for LLM stages), GPUs only when the cluster has any."""
    from bench.catalog import METHODS

    declared = dict(getattr(METHODS.get(spec.method), "resources", {}) or {})
    if not cluster_gpus:
        declared.pop("num_gpus", None)
    return {"num_cpus": cpus_per_task, **declared}


def _run_here(pending: list[RunSpec], root: str, cache_dir: str, options: RunOptions, requested: dict,
              on_start, on_result) -> None:
    """workers=1: each run in this process, torch threads set explicitly (and restored afterwards); on an
    interrupt, the processes the run started are terminated."""
    import psutil
    import torch

    before = {p.pid for p in psutil.Process().children()}
    previous = torch.get_num_threads()
    torch.set_num_threads(options.torch_threads(1))
    try:
        for spec in pending:
            on_start(spec.run_id)
            on_result(_execute_safely(spec, root, cache_dir, options, requested))
    except BaseException:  # what an interrupted run started does not outlive it
        with _signals_deferred():
            _stop_processes([], _new_children(before))
        raise
    finally:
        torch.set_num_threads(previous)


def _run_pool(pending: list[RunSpec], root: str, cache_dir: str, options: RunOptions, requested: dict,
              workers: int, on_result) -> None:
    """A pool of `workers` spawned processes; on any interrupt, the workers are terminated at once."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(options.torch_threads(workers), os.getpid()))
    try:
        futures = [pool.submit(_execute_safely, s, root, cache_dir, options, requested) for s in pending]
        for future in as_completed(futures):
            on_result(future.result())
    except BaseException:
        with _signals_deferred():
            _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _run_ray(pending: list[RunSpec], root: str, cache_dir: str, options: RunOptions, requested: dict,
             address: str | None, cpus_per_task: float, on_result) -> None:
    """One Ray task per run; records land in the same store (a path every worker sees). On an interrupt
    the outstanding tasks are force-cancelled, and Ray shut down if this call started it."""
    try:
        import ray
    except ImportError as exc:
        from bench.errors import BenchError

        raise BenchError("--executor ray needs Ray: pip install -e '.[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        if _in_main_thread():  # ray.init makes SIGTERM exit; ours stops the tasks first
            signal.signal(signal.SIGTERM, _raise_interrupt)
    refs: list = []
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        remote = ray.remote(_ray_task)
        threads = options.threads or max(1, int(cpus_per_task))
        refs = [remote.options(**task_resources(spec, cpus_per_task, gpus)).remote(
            spec, root, cache_dir, options, requested, threads) for spec in pending]
        while refs:
            ready, refs = ray.wait(refs, num_returns=1, timeout=1.0)  # returns to Python: signals land
            for ref in ready:
                on_result(ray.get(ref))
    except BaseException:
        with _signals_deferred():
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            with _signals_deferred():
                ray.shutdown()


def _console_stream():
    """A text stream on a duplicate of stderr's file descriptor (sys.stderr itself where it has none)."""
    try:
        return io.TextIOWrapper(io.FileIO(os.dup(sys.stderr.fileno()), "w"), line_buffering=True,
                                encoding=getattr(sys.stderr, "encoding", None) or "utf-8", errors="replace")
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return sys.stderr


def run_specs(specs: list[RunSpec], store: ResultStore, cache_dir: Path, options: RunOptions | None = None,
              workers: int = 1, requested: dict | None = None, executor: str = "local",
              ray_address: str | None = None, cpus_per_task: float = 1) -> dict[str, Any]:
    """Run every pending spec; returns counts and failures. Completed runs are skipped.

    executor "local" (default): this process, or a pool of `workers` processes; "ray": one Ray task
    per run on the cluster at `ray_address` (None: start a local one), `cpus_per_task` CPUs each.
    torch threads per run: `options.torch_threads(workers)` (Ray: `options.threads` or `cpus_per_task`).
    SIGINT / SIGTERM stop every run of this call, clear the folders of the runs left without a record and
    raise KeyboardInterrupt."""
    from tqdm.auto import tqdm

    options = options or RunOptions()
    requested = requested or {}
    # seed-major order: every row of a table gets its first seed before any row gets a second, so an
    # interrupted or partial suite still covers the whole grid
    pending = sorted((s for s in specs if not store.has(s.run_id)), key=lambda s: s.seed)
    summary = {"total": len(specs), "skipped": len(specs) - len(pending), "done": 0, "failed": {}}
    if not pending:
        return summary
    labels = {s.run_id: s.label for s in pending}
    root, cache = str(Path(store.root).resolve()), str(Path(cache_dir).resolve())
    shown: set[str] = set()  # notices already on the terminal (each distinct line once)

    def show(notices, write) -> None:
        for line in notices:
            if line not in shown:
                shown.add(line)
                write(line)

    with _sigterm_interrupts(), contextlib.ExitStack() as stack:
        # data, splits and item embeddings shared by the runs: built once here, their output in one log, with the
        # pre-flight checks of every setting before and after (bench.runner.preflight), before any run
        prepare_log = run_log_path(root, "prepare")
        if options.progress:
            print(f"preparing shared data, splits and embeddings (log: {prepare_log})", flush=True)
        notices: list[str] = []
        try:
            with capture_run_output(prepare_log, notices=notices):
                prepare_shared(pending, cache_dir, options.device, options.progress)
        finally:
            show(notices, lambda line: print(line, file=sys.stderr, flush=True))
        # the bar writes to its own copy of the terminal's stderr: a run in this process sends fds 1 and 2 to its
        # log (capture_run_output), and the bar's in-run progress must still reach the terminal
        console = _console_stream()
        if console is not sys.stderr:
            stack.callback(console.close)
        bar = tqdm(total=len(pending), desc=str(requested.get("suite") or "runs"), unit="run",
                   disable=not options.progress, file=console)
        # inside each run in flight: its epoch / step, validation score, ETA (bench.progress), on the bar
        watcher = ProgressWatcher(root, labels, lambda line: bar.set_postfix_str(line), WATCH_INTERVAL_S)
        for spec in pending:
            progress_path(root, spec.run_id).unlink(missing_ok=True)  # an interrupted attempt's last state
            watcher.start_run(spec.run_id)

        def on_start(run_id: str) -> None:
            bar.set_postfix_str(labels[run_id])

        def on_result(result) -> None:
            run_id, error = result[0], result[1]
            watcher.end_run(run_id)
            show(getattr(result, "notices", ()), lambda line: tqdm.write(line, file=sys.stderr))
            if error is None and not getattr(result, "ran", True):
                summary["skipped"] += 1  # completed meanwhile by another process: not run here
            elif error is None:
                summary["done"] += 1
            else:
                summary["failed"][labels[run_id]] = error
                last = (error.strip().splitlines() or ["?"])[-1]
                tqdm.write(f"FAILED {labels[run_id]}: {last} (log: {run_log_path(root, run_id)})",
                           file=sys.stderr)
            bar.set_postfix_str(labels[run_id], refresh=False)
            bar.update()

        try:
            with watcher if options.progress else contextlib.nullcontext():
                if executor == "ray":
                    _run_ray(pending, root, cache, options, requested, ray_address, cpus_per_task, on_result)
                elif workers <= 1:
                    _run_here(pending, root, cache, options, requested, on_start, on_result)
                else:
                    _run_pool(pending, root, cache, options, requested, workers, on_result)
        except BaseException:  # an interrupted run leaves no half-written folder behind
            with _signals_deferred():
                store.discard_unfinished(s.run_id for s in pending)
            raise
        finally:
            bar.close()
    return summary
