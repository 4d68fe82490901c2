"""CoLLM / TALLRec scoring speed (pytest-benchmark; not in the default test run).

    .venv/bin/python -m pytest benchmarks/test_collm_speed.py -m benchmark --benchmark-enable -s

Pairs per second of the Yes/No scorer on real ml-100k `ctr_temporal` test pairs with SmolLM2-135M:
the per-user prefix key/value cache (one prefix pass per user + short suffixes) vs every pair scored as
a full prompt, same model, same batch size, same pairs; outputs must agree to 1e-4.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from bench.data.cards import load_card, load_dataset
from bench.data.splits import load_or_make_split, resolve_split_params
from bench.options import RunOptions
from tests.conftest import FitCall

pytestmark = pytest.mark.benchmark
CACHE = Path(os.environ.get("BENCH_CACHE", "datasets/cache"))
USERS, PAIRS_PER_USER, BATCH = 4, 16, 8


def test_prefix_cache_vs_full_prompt_pairs_per_second(benchmark):
    import torch

    from methods.collm.method import ICL

    dataset = load_dataset(load_card("ml-100k", {"min_rating": None, "kcore": 0}), CACHE)
    params = resolve_split_params("ctr_temporal", {"train_months": 3.5, "valid_months": 1.75,
                                                   "test_months": 1.75, "max_test_users": USERS,
                                                   "max_pairs_per_test_user": PAIRS_PER_USER})
    split = load_or_make_split(dataset, "ctr_temporal", params, CACHE)
    method = ICL()
    method.options = RunOptions(llm_eval_batch_size=BATCH)
    ctx = FitCall(dataset=dataset, split=split, seed=0, device="cpu", run_dir=CACHE / "bench-tmp",
                     cache_dir=CACHE, backbone="none")
    ctx.run(method)
    test = split.test
    users, items = list(test["user"]), list(test["item"])
    hists = [method.tests.get(u, i) for u, i in zip(users, items)]

    def run(cached: bool):
        out = []
        for user in sorted(set(users)):  # one call per user, as the evaluation does
            rows = [k for k, u in enumerate(users) if u == user]
            out.append(method.logits([users[k] for k in rows], [items[k] for k in rows],
                                     [hists[k] for k in rows], cached=cached))
        return torch.cat(out)

    start = time.perf_counter()
    full = run(False)
    full_seconds = time.perf_counter() - start
    cached = benchmark.pedantic(run, args=(True,), rounds=1, iterations=1)
    cached_seconds = benchmark.stats.stats.median
    n = len(users)
    assert torch.allclose(cached, full, atol=1e-4), float((cached - full).abs().max())
    benchmark.extra_info.update({"pairs": n, "users": len(set(users)), "batch_size": BATCH,
                                 "pairs_per_s_cached": n / cached_seconds, "pairs_per_s_full": n / full_seconds,
                                 "speedup": full_seconds / cached_seconds,
                                 "max_abs_diff": float((cached - full).abs().max())})
    print(f"\n{n} pairs of {len(set(users))} users, batch {BATCH}: prefix cache {n / cached_seconds:.2f} pairs/s, "
          f"full prompts {n / full_seconds:.2f} pairs/s, speedup {full_seconds / cached_seconds:.2f}x, "
          f"max |diff| {float((cached - full).abs().max()):.2e}")
    assert np.isfinite(cached.numpy()).all()
