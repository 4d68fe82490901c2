"""Progress inside a run: what a long run is doing now (epoch k of its cap, its validation score and the best so
far, an LLM stage's step, PtE's generations), with an ETA, on the suite's progress bar.

A run writes its latest state to `<results>/logs/<run_id>.progress.json` (atomically, at most every
`MIN_INTERVAL_S` seconds, and always at a stage's last step); the process showing the bar reads the files of the
runs in flight once a second (`ProgressWatcher`), whichever executor runs them (this process, a pool worker or a
Ray task on a shared results folder). The file is a view of the moment, never an input: it lives beside the run's
log (git-ignored), not in the run folder (sealed), and is removed when the run ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MIN_INTERVAL_S = 0.5  # the most often a run rewrites its progress file


def progress_path(root: Path | str, run_id: str) -> Path:
    """Where run `run_id` of the results folder `root` writes its progress (beside its log)."""
    return Path(root) / "logs" / f"{run_id}.progress.json"


class RunProgress:
    """The progress reporter a run's methods get as `ctx.progress`: `update(stage, step, total, unit, **values)`
    after each epoch / step / generation. `values`: the numbers worth seeing (e.g. valid=0.031, best=0.033)."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.monotonic):
        self.path, self.clock = path, clock
        self.stage: str | None = None
        self.stage_started = 0.0
        self.written = -math.inf

    def begin(self, stage: str) -> None:
        """The stage starts now (its ETA counts from here, not from its first update)."""
        self.stage, self.stage_started = stage, self.clock()

    def update(self, stage: str, step: int, total: int | None = None, unit: str = "step", **values: Any) -> None:
        observer = _OBSERVER.get()
        if observer is not None:  # e.g. `bench tune`'s pruner, which may stop the run by raising
            observer(stage, step, total, values)
        if self.path is None:
            return
        now = self.clock()
        if stage != self.stage:
            self.stage, self.stage_started = stage, now
        last = total is not None and step >= total
        if now - self.written < MIN_INTERVAL_S and not last:
            return
        state = {"stage": stage, "step": int(step), "total": None if total is None else int(total), "unit": unit,
                 "seconds": now - self.stage_started,
                 "values": {k: v for k, v in values.items() if v is not None}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(state, default=float))
            os.replace(tmp, self.path)
            self.written = now
        except OSError:  # progress is a courtesy: a full disk or a read-only log folder never stops a run
            pass

    def close(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass


NO_PROGRESS = RunProgress(None)
# who else hears every update of the runs in this context (bench.tuning: the trial's pruner); None: nobody
_OBSERVER: contextvars.ContextVar[Callable[[str, int, int | None, dict], None] | None] = contextvars.ContextVar(
    "bench_progress_observer", default=None)


@contextlib.contextmanager
def observing(callback: Callable[[str, int, int | None, dict], None]) -> Iterator[None]:
    """For the block, `callback(stage, step, total, values)` hears every progress update of the runs executed in
    this context (in this thread: in-process runs only), whether or not their progress is shown."""
    token = _OBSERVER.set(callback)
    try:
        yield
    finally:
        _OBSERVER.reset(token)
# the reporter of the run this code is part of (set by the runner around fit and evaluation), for code that is
# reached without the RunContext (the shared LLM training loop, PtE's generator); NO_PROGRESS outside a run
_CURRENT: contextvars.ContextVar[RunProgress] = contextvars.ContextVar("bench_progress", default=NO_PROGRESS)


def current() -> RunProgress:
    """The active run's reporter (`active`), or the no-op one."""
    return _CURRENT.get()


@contextlib.contextmanager
def active(reporter: RunProgress) -> Iterator[RunProgress]:
    """Make `reporter` the one `current()` returns for the block."""
    token = _CURRENT.set(reporter)
    try:
        yield reporter
    finally:
        _CURRENT.reset(token)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def describe(state: dict[str, Any]) -> str:
    """One short line: `train epoch 7/50 valid 0.0312 best 0.033 ETA 2m10s` (ETA from the stage's pace so far;
    none without a total or before the first step)."""
    step, total = state.get("step", 0), state.get("total")
    text = str(state.get("stage", "?"))
    if step or total:
        text += f" {state.get('unit', 'step')} {step}" + (f"/{total}" if total else "")
    text += "".join(f" {key} {_number(value)}" for key, value in (state.get("values") or {}).items())
    if total and step and step < total and state.get("seconds", 0.0) > 0:
        text += f" ETA {_duration(state.get('seconds', 0.0) / step * (total - step))}"
    return text


def read_progress(path: Path) -> str | None:
    """The line `describe` makes of a progress file, or None (no file, or one being replaced)."""
    try:
        return describe(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


class ProgressWatcher:
    """A thread that, once a second, reads the progress files of the runs in flight and hands `show` one line
    (`label: stage ...` per run, ` | `-separated), while the suite's bar waits on whole runs."""

    def __init__(self, root: Path | str, labels: dict[str, str], show: Callable[[str], None],
                 interval: float = 1.0):
        self.root, self.labels, self.show, self.interval = Path(root), labels, show, interval
        self.running: dict[str, None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-progress", daemon=True)

    def start_run(self, run_id: str) -> None:
        self.running[run_id] = None

    def end_run(self, run_id: str) -> None:
        self.running.pop(run_id, None)

    def line(self) -> str:
        parts = []
        for run_id in list(self.running):
            state = read_progress(progress_path(self.root, run_id))
            if state:
                parts.append(f"{self.labels.get(run_id, run_id)}: {state}")
        return " | ".join(parts)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            line = self.line()
            if line:
                self.show(line)

    def __enter__(self) -> ProgressWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
