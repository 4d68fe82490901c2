"""CoLLM / TALLRec Yes/No scoring: the per-user prefix cache against full prompts (pytest-benchmark; not in the
default test run).

    .venv/bin/python -m pytest benchmarks/test_collm_speed.py -m benchmark --benchmark-enable -s

Real ml-100k `ctr_temporal` test pairs (each with the history the split saved for it) scored by ICL with
SmolLM2-135M: the prefix key/value cache (pairs with one prompt prefix share one prefix pass + short suffixes)
against the anchor, every pair scored as a full prompt, same model, batch size and pairs; outputs agree to 1e-4.
CPU seconds at one torch thread, a warm-up round, rotating rounds (benchmarks/timing.py). Two history settings:
`window_start` (a user's test pairs share one history, so one prefix: the cache's case), bound full / cached
>= 1.5; `pair` (ctr_temporal's default: each pair's own earlier positives, so nearly every pair has its own
prefix and the cache has nothing to share), bound >= 0.9 (the cache, on by default, must not cost much).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench.data.cards import load_card, load_dataset
from bench.data.splits import load_or_make_split, resolve_split_params
from bench.options import RunOptions
from benchmarks.timing import alternate, check, fixed_threads, median, paired_ratio
from tests.conftest import FitCall

pytestmark = pytest.mark.benchmark
USERS, PAIRS_PER_USER, BATCH = 4, 8, 8
ROUNDS = int(os.environ.get("COLLM_BENCH_ROUNDS", "2"))
SPEEDUP_BOUNDS = {"window_start": 1.5, "pair": 0.9}


@pytest.mark.parametrize("history", ["window_start", "pair"])
def test_prefix_cache_vs_full_prompt_pairs_per_second(benchmark, tmp_path, bench_cache, history):
    import torch

    from bench.eval.pointwise import histories
    from methods.collm.method import ICL

    dataset = load_dataset(load_card("ml-100k", {"min_rating": None, "kcore": 0}), bench_cache)
    params = resolve_split_params("ctr_temporal", {"train_months": 3.5, "valid_months": 1.75,
                                                   "test_months": 1.75, "max_test_users": USERS,
                                                   "max_pairs_per_test_user": PAIRS_PER_USER,
                                                   "history": history})
    split = load_or_make_split(dataset, "ctr_temporal", params, bench_cache)
    method = ICL()
    ctx = FitCall(dataset=dataset, split=split, seed=0, device="cpu", run_dir=tmp_path / "run",
                  cache_dir=bench_cache, backbone="none", options=RunOptions(llm_eval_batch_size=BATCH, progress=False))
    pairs = histories(split, "test")  # each test pair's saved history, as the evaluation scores it
    users, items, hists = list(pairs.frame["user"]), list(pairs.frame["item"]), list(pairs.histories)

    def run(cached: bool):
        def score(_):
            out = []
            for user in sorted(set(users)):  # one call per user, as the evaluation does
                rows = [k for k, u in enumerate(users) if u == user]
                out.append(method.logits([users[k] for k in rows], [items[k] for k in rows],
                                         [hists[k] for k in rows], cached=cached))
            return torch.cat(out)
        return score

    with fixed_threads(1):
        ctx.run(method)
        seconds, outputs = alternate({"prefix_cache": run(True), "full_prompts": run(False)}, ROUNDS)
    cached, full = outputs["prefix_cache"][0], outputs["full_prompts"][0]
    diff = float((cached - full).abs().max())
    assert torch.allclose(cached, full, atol=1e-4), diff
    assert np.isfinite(cached.numpy()).all()
    n = len(users)
    prefixes = len({tuple(method.builder.encode(h, i).ids[:method.builder.encode(h, i).prefix_len])
                    for h, i in zip(hists, items)})
    check(benchmark, "prefix_cache_speedup", paired_ratio(seconds, "full_prompts", "prefix_cache"),
          SPEEDUP_BOUNDS[history], at_most=False, history=history, pairs=n, distinct_prefixes=prefixes, users=len(set(users)), batch_size=BATCH, rounds=ROUNDS,
          pairs_per_cpu_s_cached=n / median(seconds["prefix_cache"]),
          pairs_per_cpu_s_full=n / median(seconds["full_prompts"]), max_abs_diff=diff)
