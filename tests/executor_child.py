"""Child process of tests/test_executors.py: `run_specs` over N fake specs (run id, seed and label, all
an executor reads of a spec) whose runs are faked: each takes the run's lock, writes a marker
`started/<run_id>.json` (its pid, its torch thread count, the pid of the sleeping grandchild it may
start), sleeps, then writes a record.

usage: python tests/executor_child.py RESULTS WORKERS N [local|ray]
env: EXECUTOR_CHILD_SLEEP seconds per run (default 1), EXECUTOR_CHILD_FAST=K: runs of seed < K take 0.1 s,
EXECUTOR_CHILD_GRANDCHILD=1: each run starts a sleeping grandchild.
Prints the summary as JSON; exits 130 on KeyboardInterrupt (as `bench run` does).

The fakes are installed when this file runs as a script, and in spawned pool workers (which import it as
`__mp_main__`); Ray tasks get `fake_ray_task` by value.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import bench.executors as executors

SLEEP_S = float(os.environ.get("EXECUTOR_CHILD_SLEEP", "1"))
GRANDCHILD = os.environ.get("EXECUTOR_CHILD_GRANDCHILD") == "1"
FAST = int(os.environ.get("EXECUTOR_CHILD_FAST", "0"))  # runs with a seed below this take 0.1 s


@dataclass(frozen=True)
class FakeSpec:
    run_id: str
    seed: int
    label: str
    method: str = "random"


def fake_specs(n: int) -> list[FakeSpec]:
    return [FakeSpec(f"fake{seed:04d}", seed, f"fake [seed={seed}]") for seed in range(n)]


def slow_execute(spec, store, cache_dir, options, requested):
    import pandas as pd
    import torch

    with store.lock(spec.run_id):
        if store.has(spec.run_id):
            return store.load(spec.run_id)
        marker = {"pid": os.getpid(), "threads": torch.get_num_threads(), "grandchild": None}
        if GRANDCHILD:
            grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            marker["grandchild"] = grandchild.pid
        work = store.run_dir(spec.run_id) / "work"  # what a real run writes first (RecBole's logs, checkpoints)
        work.mkdir(parents=True, exist_ok=True)
        (work / "checkpoint.pth").write_text("partial")
        started = Path(store.root) / "started" / f"{spec.run_id}.json"
        started.parent.mkdir(parents=True, exist_ok=True)
        started.write_text(json.dumps(marker))
        print(f"run {spec.run_id} sleeping", flush=True)
        try:
            time.sleep(0.1 if spec.seed < FAST else SLEEP_S)
        finally:  # a run that finishes leaves nothing running
            if marker["grandchild"]:
                grandchild.terminate()
                grandchild.wait()
        record = {"status": "complete", "run_id": spec.run_id, "threads": marker["threads"], "spec": {},
                  "metrics": {"overall": {}}}
        store.write(spec.run_id, record, pd.DataFrame({"user": ["1"], "ndcg@10": [0.0]}))
        return record


def fake_ray_task(spec, root, cache_dir, options, requested, threads):
    executors._init_run_process(threads)
    executors.execute = slow_execute
    return executors._execute_safely(spec, root, cache_dir, options, requested)


def install_fakes() -> None:
    executors.execute = slow_execute
    executors.prepare_shared = lambda *args, **kwargs: None
    executors._ray_task = fake_ray_task


if __name__ in ("__main__", "__mp_main__"):  # this script and its spawned workers; not an importer
    install_fakes()


def main(argv: list[str]) -> int:
    from bench.options import RunOptions
    from bench.records import ResultStore

    root, workers, n = Path(argv[0]), int(argv[1]), int(argv[2])
    executor = argv[3] if len(argv) > 3 else "local"
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    faulthandler.register(signal.SIGUSR1)  # a hung child shows where
    specs = fake_specs(n)
    try:
        summary = executors.run_specs(specs, ResultStore(root), root / "cache", RunOptions(progress=False),
                                      workers=workers, executor=executor)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
