"""Executors: run pending RunSpecs in this process, a local process pool, or one Ray task per run.

Shared cached artifacts (dataset, split, text embeddings) are prepared once in the parent first
(`bench.runner.prepare_shared`); each run then goes through `bench.runner.execute`.
"""

from __future__ import annotations

import os
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from bench.records import ResultStore
from bench.runner import execute, prepare_shared
from bench.spec import RunSpec


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _execute_safely(spec: RunSpec, root: str, cache_dir: str, device: str, requested: dict) -> tuple[str, str | None]:
    try:
        store = ResultStore(Path(root))
        execute(spec, store, Path(cache_dir), device, requested)
        (store.run_dir(spec.run_id) / "error.txt").unlink(missing_ok=True)  # a failed earlier try's
        return spec.run_id, None
    except Exception:  # reported per run; the suite goes on, and a rerun retries it
        error = traceback.format_exc()
        path = ResultStore(Path(root)).run_dir(spec.run_id) / "error.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(error)
        return spec.run_id, error


def _ray_task(spec: RunSpec, root: str, cache_dir: str, device: str, requested: dict,
              threads: int) -> tuple[str, str | None]:
    _worker_init(threads)
    return _execute_safely(spec, root, cache_dir, device, requested)


def task_resources(spec: RunSpec, cpus_per_task: float, cluster_gpus: float) -> dict[str, float]:
    """Ray resources of one run: `cpus_per_task` CPUs, plus what the method declares (class attribute
    `resources`, e.g. {"num_gpus": 1} for LLM stages), GPUs only when the cluster has any."""
    from bench.catalog import METHODS

    declared = dict(getattr(METHODS.get(spec.method), "resources", {}) or {})
    if not cluster_gpus:
        declared.pop("num_gpus", None)
    return {"num_cpus": cpus_per_task, **declared}


def _run_ray(pending: list[RunSpec], store: ResultStore, cache_dir: Path, device: str, requested: dict,
             address: str | None, cpus_per_task: float, on_result) -> None:
    """One Ray task per run; records land in the same store (a path every worker sees)."""
    try:
        import ray
    except ImportError as exc:
        from bench.errors import BenchError

        raise BenchError("--executor ray needs Ray: pip install -e '.[ray]'") from exc
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    remote = ray.remote(_ray_task)
    threads = max(1, int(cpus_per_task))
    refs = [remote.options(**task_resources(spec, cpus_per_task, gpus)).remote(
        spec, str(Path(store.root).resolve()), str(Path(cache_dir).resolve()), device, requested, threads)
        for spec in pending]
    while refs:
        ready, refs = ray.wait(refs, num_returns=1)
        on_result(*ray.get(ready[0]))


def run_specs(specs: list[RunSpec], store: ResultStore, cache_dir: Path, device: str = "cpu",
              workers: int = 1, requested: dict | None = None, progress: bool = True,
              executor: str = "local", ray_address: str | None = None,
              cpus_per_task: float = 1) -> dict[str, Any]:
    """Run every pending spec; returns counts and failures. Completed runs are skipped.

    executor "local" (default): this process, or a pool of `workers` processes; "ray": one Ray task
    per run on the cluster at `ray_address` (None: start a local one), `cpus_per_task` CPUs each."""
    from tqdm.auto import tqdm

    # seed-major order: every row of a table gets its first seed before any row gets a second, so an
    # interrupted or partial suite still covers the whole grid
    pending = sorted((s for s in specs if not store.has(s.run_id)), key=lambda s: s.seed)
    summary = {"total": len(specs), "skipped": len(specs) - len(pending), "done": 0, "failed": {}}
    if not pending:
        return summary
    prepare_shared(pending, cache_dir, device, progress)
    cpus = os.cpu_count() or 1
    bar = tqdm(total=len(pending), desc="runs", disable=not progress)
    labels = {s.run_id: s.label for s in pending}
    if executor == "ray":
        def on_result(run_id: str, error: str | None) -> None:
            if error is None:
                summary["done"] += 1
            else:
                summary["failed"][labels[run_id]] = error
            bar.update()

        _run_ray(pending, store, cache_dir, device, requested or {}, ray_address, cpus_per_task, on_result)
    elif workers <= 1:
        for spec in pending:
            bar.set_postfix_str(spec.label)
            run_id, error = _execute_safely(spec, str(store.root), str(cache_dir), device, requested or {})
            summary["done" if error is None else "failed"] = (
                summary["done"] + 1 if error is None else {**summary["failed"], labels[run_id]: error})
            bar.update()
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        threads = max(1, cpus // workers)
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)) as pool:
            futures = [pool.submit(_execute_safely, s, str(store.root), str(cache_dir), device, requested or {})
                       for s in pending]
            for future in as_completed(futures):
                run_id, error = future.result()
                if error is None:
                    summary["done"] += 1
                else:
                    summary["failed"][labels[run_id]] = error
                bar.update()
    bar.close()
    return summary
