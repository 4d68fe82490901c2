"""Execute RunSpecs: prepare shared artifacts once, fit, evaluate, time, and write one record per run.

A finished run (a complete record) is skipped; anything else is redone from scratch, so an interrupted
suite resumes where it stopped. How runs are spread over processes or a Ray cluster is
`bench.executors`.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.options import RunOptions, resolve_device
from bench.progress import RunProgress, active, progress_path
from bench.records import PAIRS_FILE, ResultStore, git_state, machine, package_versions
from bench.spec import RunSpec
from bench.types import RunContext, TrainView

# run ids `execute` found complete instead of running (another process finished them first); per process
SKIPPED: set[str] = set()
_PREFLIGHT_DONE: set[str] = set()  # the pre-flight checks passed in this process (by what they depend on)


def _dataset(spec: RunSpec, cache_dir: Path):
    from bench.data.cards import DatasetCard, load_dataset

    return load_dataset(DatasetCard.model_validate(spec.dataset_settings), cache_dir)


def _split(spec: RunSpec, dataset, cache_dir: Path):
    from bench.data.splits import load_or_make_split

    return load_or_make_split(dataset, spec.split, spec.split_settings, cache_dir)


def _encoder(spec: RunSpec, device: str, cache_dir: Path):
    from bench.encoders import get_encoder

    return get_encoder(spec.encoder, spec.encoder_settings, device, cache_dir)


def prepare_shared(specs: list[RunSpec], cache_dir: Path, device: str, progress: bool = True) -> None:
    """Build every dataset, split and item-embedding cache the runs need, once, in this process; with the
    pre-flight checks of every setting (`preflight`) before (files only) and after (with the prepared data)."""
    from bench.encoders import encode_items

    preflight(specs, cache_dir)
    _text_preflight(specs, cache_dir)  # with the data sets prepared, before any split or embedding
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
    preflight(specs, cache_dir, data=True)


def preflight(specs: list[RunSpec], cache_dir: Path, data: bool = False) -> None:
    """Every check of the runs' settings against files, once per distinct setting, before any run starts; a
    problem is a BenchError (one line: exit 2). Without `data`: nothing is built or trained: the encoders' model
    folders (`check_encoder_path`) and each method's `check_inputs` (path settings: missing, dangling links, a
    folder that is not a model; the LLM methods: prompt templates, answer tokens as distinct single tokens of the
    tokenizer, the context of the model's config). With `data` (after `prepare_shared`, so the data sets and
    splits are cached): the checks that read them too, each method's `check_data` (e.g. the longest prompt a
    scored pair can have against the model's context) and the `check_inputs` a builtin model asset deferred.
    Without `data`, a method that needs item text (`Method.needs_item_text`) on a data set without any (no item
    file or no text column in it) is refused, naming the method and the data set (`_text_preflight`: the same once
    the data set is prepared, when no item has text of its own)."""
    from bench.catalog import METHODS
    from bench.encoders import check_encoder_path
    from bench.method import Method

    cache_dir = Path(cache_dir)
    for spec in specs:
        if getattr(METHODS.get(spec.method), "needs_item_text", False):
            key = json.dumps(["text", spec.method, spec.dataset_settings], sort_keys=True, default=str)
            if key not in _PREFLIGHT_DONE:
                from bench.data.cards import DatasetCard
                from bench.data.own import check_item_text

                check_item_text(spec.method, True, DatasetCard.model_validate(spec.dataset_settings))
                _PREFLIGHT_DONE.add(key)
        if spec.encoder is not None and spec.encoder_settings.get("path"):
            key = json.dumps(["encoder", spec.encoder, spec.encoder_settings], sort_keys=True, default=str)
            if key not in _PREFLIGHT_DONE:
                check_encoder_path(spec.encoder, spec.encoder_settings["path"])
                _PREFLIGHT_DONE.add(key)
        inputs = json.dumps(["method", spec.method, spec.method_settings, str(cache_dir), data], sort_keys=True,
                            default=str)
        method = None
        if inputs not in _PREFLIGHT_DONE:
            method = METHODS.create(spec.method, spec.method_settings)
            method.check_inputs(cache_dir, build=data)
            _PREFLIGHT_DONE.add(inputs)
        if not data or METHODS.get(spec.method).check_data is Method.check_data:
            continue
        checked = json.dumps([inputs, spec.dataset_settings, spec.split, spec.split_settings], sort_keys=True,
                             default=str)
        if checked not in _PREFLIGHT_DONE:
            method = method or METHODS.create(spec.method, spec.method_settings)
            dataset = _dataset(spec, cache_dir)
            method.check_data(TrainView.of(dataset, _split(spec, dataset, cache_dir)), cache_dir)
            _PREFLIGHT_DONE.add(checked)


def _text_preflight(specs: list[RunSpec], cache_dir: Path) -> None:
    """A method that needs item text on a prepared data set where no item has text of its own (every text the
    placeholder): BenchError naming both, before any split, embedding or run."""
    from bench.catalog import METHODS
    from bench.data.cards import DatasetCard
    from bench.data.own import check_item_text

    for spec in specs:
        key = json.dumps(["text-data", spec.method, spec.dataset_settings], sort_keys=True, default=str)
        if key in _PREFLIGHT_DONE or not getattr(METHODS.get(spec.method), "needs_item_text", False):
            continue
        check_item_text(spec.method, True, DatasetCard.model_validate(spec.dataset_settings), _dataset(spec, cache_dir))
        _PREFLIGHT_DONE.add(key)


def _latency(method, users: np.ndarray, histories: dict | None = None, n: int = 30) -> dict[str, float]:
    """Milliseconds to score one user against every item (after one warm-up call); `histories`: the
    held-out sequences the protocol gives users absent from training."""
    import torch

    from bench.eval.ranking import query_for

    histories = histories or {}
    sample = users[:n]
    method.score(query_for(sample[:1], histories))
    times = []
    load_before = os.getloadavg()[0]
    for user in sample:
        start = time.perf_counter()
        method.score(query_for([user], histories))
        times.append((time.perf_counter() - start) * 1000)
    # the conditions of the measurement: a probe run while other jobs share the cores measures them too
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "n_users": len(times),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_1min": max(load_before, os.getloadavg()[0])}


def execute(spec: RunSpec, store: ResultStore, cache_dir: Path, options: RunOptions | str | None = None,
            requested: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one spec to a record (skipped if already complete). `options`: how to run (a device string
    means RunOptions(device=...))."""
    options = _as_options(options)
    run_id = spec.run_id
    if store.has(run_id):
        SKIPPED.add(run_id)
        return store.load(run_id)
    with store.lock(run_id):  # two processes on one run id: the second waits, then skips
        problem = store.problem(run_id)
        if problem is None:
            SKIPPED.add(run_id)
            return store.load(run_id)
        if problem != "no record":  # truncated, empty, old schema, no sidecar: kept aside, then redone
            # its one `bench: record ...` line goes to the run's log and, through the executor, to the terminal
            store.quarantine(run_id, problem)
        with _collector_skips_what_exists():
            return _execute_locked(spec, store, cache_dir, options, requested)


@contextmanager
def _collector_skips_what_exists():
    """During a run, the cyclic garbage collector leaves alone the objects that existed before it (modules,
    classes, caches: ~440k objects once torch and transformers are imported) and scans only what the run
    allocates; afterwards they are ordinary again. Measured (issue 25, benchmarks/README.md): a full collection of
    that heap costs ~0.2 CPU s and a short LightGCN run on ml-100k triggers 1-3 of them, 0.26-0.69 of its ~3 CPU s.
    The one cost: a garbage cycle through a pre-run object waits for the first collection after the run."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def build_context(spec: RunSpec, cache_dir: Path, options: RunOptions | str | None, run_dir: Path,
                  timings: dict[str, float]):
    """The method instance, its RunContext and TrainView for one spec (data, split, encoder prepared or cached):
    what a run fits, and what tools that run one stage of a method (scripts/pte_profiles.py) use."""
    from bench.backbones import backbone_settings
    from bench.catalog import METHODS
    from bench.encoders import encode_items
    from bench.identity import FORMER_RUNTIME_KEYS

    options = _as_options(options)
    device = resolve_device(options.device)  # once for the run: the method reads ctx.device
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

    method = METHODS.create(spec.method, spec.method_settings)
    ctx = RunContext(seed=spec.seed, device=device, run_dir=run_dir, cache_dir=Path(cache_dir),
                     backbone=spec.backbone, backbone_settings=backbone_settings(spec.backbone, {
                         k: v for k, v in spec.backbone_settings.items() if k not in FORMER_RUNTIME_KEYS["backbone"]}),
                     encoder=encoder, embed_items=embed_items if encoder is not None else None, options=options)
    return method, ctx, TrainView.of(dataset, split), dataset, split, encoder, embedding_info


def check_protocol(spec: RunSpec, method, split) -> None:
    """The method's declared protocol (`Method.protocol`) decides how it is evaluated; a split whose test part
    does not fit it (labelled pairs for a pointwise method, interactions for a ranking one) is a BenchError."""
    pointwise = method.protocol == "pointwise"
    if pointwise != ("label" in split.test.columns):
        raise BenchError(f"method {spec.method!r} ({method.protocol} protocol) cannot be evaluated on split "
                         f"{spec.split!r}, whose test part is " + ("labelled pairs (a pointwise split)" if not pointwise
                                                                    else "unlabelled interactions (a ranking split)"))


def _as_options(options: RunOptions | str | None) -> RunOptions:
    if isinstance(options, RunOptions):
        return options
    return RunOptions(device=options or "cpu")


def _execute_locked(spec: RunSpec, store: ResultStore, cache_dir: Path, options: RunOptions,
                    requested: dict[str, Any] | None) -> dict[str, Any]:

    run_id = spec.run_id
    run_dir = store.run_dir(run_id)
    if (run_dir / "work").exists():  # leftovers of an interrupted attempt
        shutil.rmtree(run_dir / "work")
    run_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat()
    timings: dict[str, float] = {}

    method, ctx, data, dataset, split, encoder, embedding_info = build_context(spec, cache_dir, options, run_dir,
                                                                               timings)
    # shown progress writes a file the console reads; without it, observers (bench.progress.observing) still hear
    ctx.progress = RunProgress(progress_path(store.root, run_id) if options.progress else None)
    try:
        with active(ctx.progress):
            return _fit_evaluate_record(spec, store, requested, run_id, dataset, split, encoder, embedding_info,
                                        started, timings, method, ctx, data, options)
    finally:
        ctx.progress.close()


def _fit_evaluate_record(spec, store, requested, run_id, dataset, split, encoder, embedding_info, started, timings,
                         method, ctx, data, options) -> dict[str, Any]:
    check_protocol(spec, method, split)  # before any training
    t0 = time.perf_counter()
    report = method.fit(data, ctx)
    timings["fit_total"] = time.perf_counter() - t0
    timings.update(report.timings)
    ctx.progress.update("evaluate", 0)

    t0 = time.perf_counter()
    if method.protocol == "pointwise":  # AUC / UAUC over the split's labelled test pairs (checked above)
        from bench.eval.pointwise import evaluate_method

        summary, per_user, latency, evaluation, pairs = evaluate_method(method, split, progress=options.progress)
        sidecars = {PAIRS_FILE: pairs}
        timings["evaluate"] = time.perf_counter() - t0
    else:
        from bench.eval.ranking import evaluate_ranking, test_user_histories

        summary, per_user, evaluation = evaluate_ranking(method, dataset, split, who=f"method {spec.method!r}")
        sidecars = {}
        timings["evaluate"] = time.perf_counter() - t0
        latency = _latency(method, np.sort(split.test["user"].unique()), test_user_histories(split))
    return _write_record(spec, store, requested, run_id, dataset, split, encoder, embedding_info, started,
                         summary, evaluation, method, timings, latency, ctx, report, per_user, sidecars)


def _write_record(spec, store, requested, run_id, dataset, split, encoder, embedding_info, started, summary,
                  evaluation, method, timings, latency, ctx, report, per_user, sidecars=None) -> dict[str, Any]:
    record = {
        "status": "complete",
        "run_id": run_id,
        "identity": spec.identity,  # what the run id hashes: names, seed, versions, non-default settings
        "spec": spec.model_dump(mode="json"),  # every setting, resolved
        "requested": requested or {},  # as passed: suite, profile, --set, argv
        "provenance": {
            "git": git_state(), "packages": package_versions(), "machine": machine(ctx.device),
            "options": ctx.options.model_dump(),  # how it ran (not part of the id)
            "missing_text": dataset.meta.get("missing_text"),
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
        "method_info": report.facts,
        "fit": report.as_dict(),  # converged: stopped early on validation (False: at the epoch cap)
    }
    store.write(run_id, record, per_user, sidecars)
    return record
