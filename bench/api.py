"""The Python API: run a grid or a suite and read results back as the one results frame (`bench.report.frame`),
without the command line. The command line is a thin layer over the same calls; `docs/api.md` shows both at work
(its examples run as tests: tests/test_api.py).

    from bench.api import load_results, run
    frame = load_results(suite="warm")                       # every stored run of a suite, one row per metric
    frame = run(dataset="ml-100k", split="temporal_loo", backbone="lightgcn", methods=["random"], seeds=1)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.cli import DEFAULT_CACHE, DEFAULT_RESULTS
from bench.errors import BenchError


def _suite(suite: str | None, profile: str | None, dataset: str | None, split: str | None, backbone: str | None,
           methods: Sequence[str] | str | None, seeds: int | None, encoder: str | None):
    from bench.spec import adhoc_suite, load_suite

    if isinstance(methods, str):
        methods = [methods]
    if suite is not None:
        if dataset is not None:
            raise BenchError("run(suite=...) takes no dataset: choose the suite's runs with split / backbone / "
                             "methods, or give dataset, split, backbone and methods without a suite")
        chosen = load_suite(suite, profile)
        if seeds is not None:
            chosen.seeds = list(range(seeds))
        if encoder is not None:
            chosen.encoder = encoder
        return chosen
    missing = [name for name, value in (("dataset", dataset), ("split", split), ("backbone", backbone),
                                        ("methods", methods)) if not value]
    if missing:
        raise BenchError(f"run(): give suite=..., or all of dataset, split, backbone and methods (missing: "
                         f"{', '.join(missing)})")
    from bench.data.cards import resolve_dataset

    # a data folder, file or card file runs under its data set's own name (as `bench run --dataset PATH`)
    return adhoc_suite(resolve_dataset(dataset), split, backbone, list(methods), seeds or 1, encoder or "minilm",
                       profile)


def run(dataset: str | None = None, split: str | None = None, backbone: str | None = None,
        methods: Sequence[str] | str | None = None, *, suite: str | None = None, profile: str | None = None,
        seeds: int | None = None, encoder: str | None = None, settings: dict[str, dict[str, Any]] | None = None,
        results: str | Path = DEFAULT_RESULTS, cache: str | Path = DEFAULT_CACHE, workers: int = 1,
        device: str = "cpu", threads: int | None = None, progress: bool = False) -> pd.DataFrame:
    """Run a suite (`suite=`, optionally only its runs on `split` / `backbone` / `methods`) or the grid `dataset` x
    `split` x `backbone` x `methods` x `seeds` (the ad-hoc `profile`: "cpu" by default, as `bench run`), skipping
    runs already stored under `results`, and return the results frame of every run asked for.

    `settings`: overrides by layer, as `--set` (`{"backbone": {"epochs": 3}}`). Every name and setting is checked
    before any work (BenchError naming it). A failed run raises BenchError naming it and its log."""
    from bench.executors import run_specs
    from bench.options import RunOptions
    from bench.records import ResultStore
    from bench.report.frame import results_frame
    from bench.spec import expand

    chosen = _suite(suite, profile, dataset, split, backbone, methods, seeds, encoder)
    specs = expand(chosen, {layer: dict(values) for layer, values in (settings or {}).items()})
    if suite is not None:
        for field, wanted in (("split", split), ("backbone", backbone), ("method", methods)):
            if wanted:
                names = [wanted] if isinstance(wanted, str) else list(wanted)
                specs = [s for s in specs if getattr(s, field) in names]
        if not specs:
            raise BenchError(f"suite {suite!r} has no runs with split={split!r}, backbone={backbone!r}, "
                             f"methods={methods!r}")
    store = ResultStore(results)
    pending = [s for s in specs if not store.has(s.run_id)]
    if pending:
        from bench.runner import preflight

        preflight(pending, Path(cache))
    options = RunOptions(device=device, threads=threads, progress=progress)
    requested = {"suite": chosen.name, "profile": profile, "api": True}
    summary = run_specs(specs, store, Path(cache), options, workers, requested)
    if summary["failed"]:
        label, error = next(iter(summary["failed"].items()))
        last = (error.strip().splitlines() or ["?"])[-1]
        raise BenchError(f"{len(summary['failed'])} run(s) failed, first {label}: {last}")
    return results_frame(store, specs)


def load_results(suite: str | None = None, profile: str | None = None, *, runs: Sequence[str] | None = None,
                 results: str | Path = DEFAULT_RESULTS) -> pd.DataFrame:
    """The results frame of a suite's stored runs (`suite`, `profile`), or of the given run ids (`runs`), read from
    the verified records under `results` (runs without a record are absent)."""
    from bench.records import ResultStore
    from bench.report.frame import results_frame, suite_frame

    store = ResultStore(results)
    if (suite is None) == (runs is None):
        raise BenchError("load_results(): give suite=... or runs=[...] (one of them)")
    if suite is not None:
        return suite_frame(suite, profile, store)
    from bench.selection import stored_specs

    wanted = list(runs)
    specs = {s.run_id: s for s in stored_specs(store) if s.run_id in set(wanted)}
    missing = [run_id for run_id in wanted if run_id not in specs]
    if missing:
        raise BenchError(f"no stored record for run id {missing[0]} under {store.root}")
    return results_frame(store, [specs[run_id] for run_id in wanted])
