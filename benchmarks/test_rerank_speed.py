"""Reranker scoring speed (pytest-benchmark; not in the default test run).

    .venv/bin/python -m pytest benchmarks/test_rerank_speed.py -m benchmark --benchmark-enable -s

Pairs per second of the Yes/No scorer on N = 50 candidates per user (methods/collm/rerank.py), SmolLM2-135M on
real ml-100k (temporal_loo: each user's train + valid sequence as history, last 10 titles, TALLRec's prompt):
all N candidates of a user scored against one cached prompt prefix, in batches of `llm_eval_batch_size` (16,
the run option's default), vs each pair's full prompt scored separately (batch 1) and vs full prompts batched
(16). The candidates are each user's 50 most popular unseen training items (the speed depends on prompt lengths,
not on which model retrieved them). `test_rerank_scores_equal_on_smollm2` asserts the equal scores; the
benchmark records the largest difference.
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
from bench.types import RunContext, TrainView

pytestmark = pytest.mark.benchmark
CACHE = Path(os.environ.get("BENCH_CACHE", "datasets/cache"))
N, USERS, BATCH = 50, int(os.environ.get("RERANK_BENCH_USERS", "2")), 16


def _scorer(tmp_path: Path, prompt: str, **settings):
    """ICL (SmolLM2-135M, `prompt`) set up on the reranker's Yes/No view of ml-100k; each user's history and N
    candidates."""
    import torch

    from methods.collm import rerank_data as rd
    from methods.collm.method import ICL
    from methods.collm.settings import LLMSettings

    torch.set_num_threads(int(os.environ.get("RERANK_BENCH_THREADS", "1")))
    dataset = load_dataset(load_card("ml-100k"), CACHE)
    split = load_or_make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}), CACHE)
    data = TrainView.of(dataset, split)
    view, _ = rd.pointwise_view(data, rd.PairSpec(10, 1, 64, 32, 0))
    method = ICL(LLMSettings(prompt=prompt, **settings))
    method.fit(view, RunContext(seed=0, device="cpu", run_dir=tmp_path, cache_dir=CACHE, backbone="lightgcn",
                                options=RunOptions(llm_eval_batch_size=BATCH, progress=False)))
    seen = rd.seen_positions(data)
    popularity = data.train["item"].value_counts().reindex(data.item_ids).fillna(0).to_numpy()
    sequences = rd.user_sequences([data.train, data.valid])
    users = np.sort(split.test["user"].unique())[:USERS]
    work = []
    for user in users:
        candidates = rd.top_candidates(popularity.astype(np.float32), seen.get(user), N)
        work.append((user, [data.item_ids[k] for k in candidates], tuple(sequences[user])[-10:]))
    return method, work


def _run(method, work, cached: bool, batch: int):
    import torch

    from methods.collm import model as cm

    out = []
    for user, items, history in work:
        if cached:
            out.append(method.logits([user] * len(items), items, [history] * len(items), cached=True))
            continue
        encoded = [method.builder.encode(history, item) for item in items]
        with torch.no_grad():
            out.extend(cm.full_logits(method.head, encoded[b:b + batch], None, None, method.pad_id, "cpu")
                       for b in range(0, len(encoded), batch))
    return torch.cat(out)


MODES = (("prefix_cache", True, BATCH), ("per_pair_full", False, 1), ("batched_full", False, BATCH))


@pytest.mark.parametrize("template", ["tallrec", "rerank"])
def test_rerank_prefix_cache_vs_full_prompts_pairs_per_second(benchmark, tmp_path, template):
    """Per user, the three modes in rotating order (the machine is shared and its speed drifts); each mode's
    time summed over users. `tallrec`: TALLRec's prompt (the title, then '? Answer with "Yes" or "No".
    #Answer:'); `rerank`: the rerankers' default (the title last)."""
    from methods.collm import model as cm

    prompt = {"tallrec": cm.TEXT_PROMPT, "rerank": cm.TEXT_RERANK_PROMPT}[template]
    method, work = _scorer(tmp_path, prompt)
    pairs = sum(len(items) for _, items, _ in work)
    encoded = method.builder.encode(work[0][2], work[0][1][0])
    _run(method, work[:1], True, BATCH)  # warm-up
    timings = dict.fromkeys((m[0] for m in MODES), 0.0)
    outputs: dict = {m[0]: [] for m in MODES}
    for k, one in enumerate(work):
        for label, cached, batch in MODES[k % 3:] + MODES[:k % 3]:
            start = time.perf_counter()
            outputs[label].append(_run(method, [one], cached, batch))
            timings[label] += time.perf_counter() - start
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    import torch

    outputs = {k: torch.cat(v) for k, v in outputs.items()}
    diff = max(float((outputs["prefix_cache"] - outputs[k]).abs().max()) for k in ("per_pair_full", "batched_full"))
    rates = {k: pairs / v for k, v in timings.items()}
    speedup = timings["per_pair_full"] / timings["prefix_cache"]
    benchmark.extra_info.update({
        "model": "SmolLM2-135M-Instruct", "template": template, "n_candidates": N, "users": len(work),
        "pairs": pairs, "batch_size": BATCH, "prompt_tokens": len(encoded.ids), "prefix_tokens": encoded.prefix_len,
        **{f"pairs_per_s_{k}": v for k, v in rates.items()}, "speedup_vs_per_pair": speedup,
        "speedup_vs_batched": timings["batched_full"] / timings["prefix_cache"],
        "ms_per_user_prefix_cache": 1000 * timings["prefix_cache"] / len(work), "max_abs_diff": diff})
    print(f"\n[{template}] N={N}, {len(work)} users, {pairs} pairs, prompt {len(encoded.ids)} tokens (prefix "
          f"{encoded.prefix_len}): prefix cache {rates['prefix_cache']:.2f} pairs/s, per-pair full prompts "
          f"{rates['per_pair_full']:.2f} pairs/s ({speedup:.2f}x), batched full prompts {rates['batched_full']:.2f} "
          f"pairs/s ({timings['batched_full'] / timings['prefix_cache']:.2f}x); "
          f"{1000 * timings['prefix_cache'] / len(work):.0f} ms per user; max |diff| {diff:.2e}")


def test_rerank_scores_equal_on_smollm2(tmp_path):
    """The prefix-cached Yes/No logits of one user's N candidates equal each pair's full prompt scored alone."""
    from methods.collm import model as cm

    method, work = _scorer(tmp_path, cm.TEXT_RERANK_PROMPT)
    fast = _run(method, work[:1], True, BATCH)
    single = _run(method, work[:1], False, 1)
    assert fast.shape == (N, 2)
    assert float((fast - single).abs().max()) < 1e-4


def test_rerank_bf16_vs_fp32_ms_per_user(benchmark, tmp_path):
    """The rerankers' CPU setting (`precision: bf16`, bfloat16 autocast) against float32, prefix-cached, per
    user at N = 50 and at the CPU default's N = 20 (the first 20 of the same candidates), in alternating order;
    with how far bf16 moves the order: Spearman correlation of each user's P(Yes) with fp32's and the overlap of
    their top 10."""
    import torch
    from scipy.stats import spearmanr

    from methods.collm import model as cm

    fp32, work = _scorer(tmp_path / "fp32", cm.TEXT_RERANK_PROMPT)
    bf16, _ = _scorer(tmp_path / "bf16", cm.TEXT_RERANK_PROMPT, precision="bf16")
    methods = {"fp32": fp32, "bf16": bf16}
    for method in methods.values():  # warm-up
        _run(method, work[:1], True, BATCH)
    timings = {(p, n): 0.0 for p in methods for n in (N, 20)}
    logits: dict = {p: [] for p in methods}
    for k, (user, items, history) in enumerate(work):
        order = list(methods) if k % 2 == 0 else list(methods)[::-1]
        for n in (N, 20):
            for p in order:
                start = time.perf_counter()
                out = _run(methods[p], [(user, items[:n], history)], True, BATCH)
                timings[(p, n)] += time.perf_counter() - start
                if n == N:
                    logits[p].append(out)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    rho, top = [], []
    for a, b in zip(logits["fp32"], logits["bf16"]):
        pa, pb = torch.softmax(a.float(), -1)[:, 0].numpy(), torch.softmax(b.float(), -1)[:, 0].numpy()
        rho.append(spearmanr(pa, pb).statistic)
        top.append(len(set(np.argsort(-pa)[:10]) & set(np.argsort(-pb)[:10])) / 10)
    ms = {f"ms_per_user_{p}_n{n}": 1000 * t / len(work) for (p, n), t in timings.items()}
    benchmark.extra_info.update({"users": len(work), "batch_size": BATCH, **ms,
                                 "speedup_bf16_n50": timings[("fp32", N)] / timings[("bf16", N)],
                                 "spearman_min": float(min(rho)), "top10_overlap_mean": float(np.mean(top))})
    print(f"\n[precision] {len(work)} users: " + ", ".join(f"{k} {v:.0f}" for k, v in ms.items())
          + f"; bf16 speed-up at N={N} {timings[('fp32', N)] / timings[('bf16', N)]:.2f}x; P(Yes) Spearman vs fp32 "
          f"min {min(rho):.3f}, top-10 overlap {np.mean(top):.2f}")
