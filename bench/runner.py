"""Execute RunSpecs: prepare shared artifacts once, fit, evaluate, time, and write one record per run.

A finished run (record.json present) is skipped; anything else is redone from scratch, so an
interrupted suite resumes where it stopped. Runs fan out over a local process pool (default one
process) after the shared, cached artifacts (dataset, split, text embeddings) are prepared once.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.records import ResultStore, git_state, machine, package_versions
from bench.spec import RunSpec
from bench.types import FitContext


def _dataset(spec: RunSpec, cache_dir: Path):
    from bench.data import DatasetCard, load_dataset

    return load_dataset(DatasetCard.model_validate(spec.dataset_settings), cache_dir)


def _split(spec: RunSpec, dataset, cache_dir: Path):
    from bench.splits import load_or_make_split

    return load_or_make_split(dataset, spec.split, spec.split_settings, cache_dir)


def _encoder(spec: RunSpec, device: str, cache_dir: Path):
    from bench.encoders import get_encoder

    return get_encoder(spec.encoder, spec.encoder_settings, device, cache_dir)


def prepare_shared(specs: list[RunSpec], cache_dir: Path, device: str, progress: bool = True) -> None:
    """Build every dataset, split and item-embedding cache the runs need, once, in this process."""
    from bench.encoders import encode_items

    seen: set[str] = set()
    for spec in specs:
        key = (spec.model_dump_json(include={"dataset_settings", "split", "split_settings", "encoder",
                                              "encoder_settings"}))
        if key in seen:
            continue
        seen.add(key)
        dataset = _dataset(spec, cache_dir)
        _split(spec, dataset, cache_dir)
        if spec.encoder:
            encoder = _encoder(spec, device, cache_dir)
            encode_items(encoder, dataset.item_text, dataset.meta.get("card", {}).get("text_template", ""),
                         cache_dir, progress=progress)


def _latency(method, users: np.ndarray, n: int = 30) -> dict[str, float]:
    """Milliseconds to score one user against every item (after one warm-up call)."""
    sample = users[:n]
    method.score(sample[:1])
    times = []
    for user in sample:
        start = time.perf_counter()
        method.score(np.array([user]))
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "n_users": len(times)}


def execute(spec: RunSpec, store: ResultStore, cache_dir: Path, device: str = "cpu",
            requested: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one spec to a record (skipped if already complete)."""
    run_id = spec.run_id
    if store.has(run_id):
        return store.load(run_id)
    with store.lock(run_id):  # two processes on one run id: the second waits, then skips
        if store.has(run_id):
            return store.load(run_id)
        return _execute_locked(spec, store, cache_dir, device, requested)


def build_context(spec: RunSpec, cache_dir: Path, device: str, run_dir: Path, timings: dict[str, float]):
    """The method instance and its FitContext for one spec (data, split, encoder prepared or cached):
    what a run fits, and what tools that run one stage of a method (scripts/pte_profiles.py) use."""
    from bench.catalog import METHODS
    from bench.encoders import encode_items

    t0 = time.perf_counter()
    dataset = _dataset(spec, cache_dir)
    split = _split(spec, dataset, cache_dir)
    timings["prepare"] = time.perf_counter() - t0

    encoder, embedding_info = None, {}
    if spec.encoder:
        encoder = _encoder(spec, device, cache_dir)

    def embed_items() -> np.ndarray:
        start = time.perf_counter()
        matrix, info = encode_items(encoder, dataset.item_text, dataset.meta["card"]["text_template"],
                                    cache_dir, progress=False)
        timings["encode"] = time.perf_counter() - start
        embedding_info.update(info)
        return matrix

    cls = METHODS.get(spec.method)
    method = cls(cls.Settings.model_validate(spec.method_settings))
    ctx = FitContext(dataset=dataset, split=split, seed=spec.seed, device=device, run_dir=run_dir,
                     cache_dir=Path(cache_dir), backbone=spec.backbone, backbone_config=dict(spec.backbone_settings),
                     encoder=encoder, embed_items=embed_items if encoder is not None else None)
    return method, ctx, dataset, split, encoder, embedding_info


def _execute_locked(spec: RunSpec, store: ResultStore, cache_dir: Path, device: str,
                    requested: dict[str, Any] | None) -> dict[str, Any]:
    from bench.metrics import evaluate, rank_users

    run_id = spec.run_id
    run_dir = store.run_dir(run_id)
    if (run_dir / "work").exists():  # leftovers of an interrupted attempt
        shutil.rmtree(run_dir / "work")
    run_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat()
    timings: dict[str, float] = {}

    method, ctx, dataset, split, encoder, embedding_info = build_context(spec, cache_dir, device, run_dir, timings)
    t0 = time.perf_counter()
    method.fit(ctx)
    timings["fit_total"] = time.perf_counter() - t0
    timings.update(ctx.timings)

    t0 = time.perf_counter()
    if "label" in split.test.columns:  # pointwise (CTR) split: AUC / UAUC over labelled test pairs
        from bench.pointwise import evaluate_method

        summary, per_user, latency, evaluation = evaluate_method(method, split)
        timings["evaluate"] = time.perf_counter() - t0
        return _write_record(spec, store, requested, run_id, dataset, split, encoder, embedding_info, started,
                             summary, evaluation, method, timings, latency, ctx, per_user)
    item_ids = dataset.item_ids
    position = {item: i for i, item in enumerate(item_ids)}
    users = np.sort(split.test["user"].unique())
    positives = {u: np.sort(g.map(position).to_numpy()) for u, g in split.test.groupby("user")["item"]}
    seen = pd.concat([split.train, split.valid])
    exclude = {u: g.map(position).to_numpy() for u, g in seen.groupby("user")["item"]}
    n_negatives = int(split.params.get("eval_negatives", 0) or 0)
    if n_negatives:  # labelled option (LLM-ESR): rank the positives among N sampled unseen items only
        from bench.splits import sampled_negative_exclusion

        exclude = sampled_negative_exclusion(split, item_ids, positives, exclude, n_negatives)
    top = rank_users(method.score, users, item_ids, positives, exclude)
    item_segment_of = split.item_segment.reindex(item_ids).fillna("tail").to_numpy()
    summary, per_user = evaluate(top, users, positives, split.user_segment, item_segment_of)
    timings["evaluate"] = time.perf_counter() - t0
    latency = _latency(method, users)
    evaluation = {"protocol": "full ranking over the catalogue; each user's train and valid items masked"
                  if not n_negatives else f"sampled: each test positive ranked among {n_negatives} sampled "
                  "negatives (LLM-ESR protocol; inflates numbers vs full ranking)", "sampled_negatives": n_negatives,
                  "n_items": int(len(item_ids)), "n_test_users": int(len(users))}
    return _write_record(spec, store, requested, run_id, dataset, split, encoder, embedding_info, started,
                         summary, evaluation, method, timings, latency, ctx, per_user)


def _write_record(spec, store, requested, run_id, dataset, split, encoder, embedding_info, started, summary,
                  evaluation, method, timings, latency, ctx, per_user) -> dict[str, Any]:
    record = {
        "status": "complete",
        "run_id": run_id,
        "spec": spec.model_dump(mode="json"),
        "requested": requested or {},
        "provenance": {
            "git": git_state(), "packages": package_versions(), "machine": machine(ctx.device),
            "dataset_hash": dataset.content_hash, "split_hash": split.content_hash,
            "split_path": str(split.path) if split.path else None,
            "encoder_fingerprint": encoder.fingerprint() if encoder is not None else None,
            "embeddings": embedding_info, "seed": spec.seed,
            "started": started, "finished": datetime.now(timezone.utc).isoformat(),
        },
        "metrics": summary,
        "evaluation": evaluation,
        "params": method.parameter_counts().as_dict(),
        "timings": timings,
        "latency": latency,
        "method_info": ctx.extra,
    }
    store.write(run_id, record, per_user)
    return record


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
