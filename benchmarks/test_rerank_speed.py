"""Reranker scoring speed (pytest-benchmark; not in the default test run).

    .venv/bin/python -m pytest benchmarks/test_rerank_speed.py -m benchmark --benchmark-enable -s

Pairs per CPU second of the Yes/No scorer on N = 50 candidates per user (methods/collm/rerank.py), SmolLM2-135M on
real ml-100k (temporal_loo: each user's train + valid sequence as history, last 10 titles, TALLRec's prompt):
all N candidates of a user scored against one cached prompt prefix, in batches of `llm_eval_batch_size` (16,
the run option's default), against the anchor of full prompts batched (16) and, with `RERANK_BENCH_PER_PAIR=1`,
each pair's full prompt scored separately (batch 1; as slow as batched on one CPU thread, so left out by default to
keep the run short). The candidates are each user's 50 most popular unseen training items (the speed depends on
prompt lengths, not on which model retrieved them). `RERANK_BENCH_USERS` users (default 3), each mode warmed up on
the first user, then `RERANK_BENCH_ROUNDS` rounds (default 2) over all users in rotating order, CPU seconds at
`RERANK_BENCH_THREADS` torch threads (default 1; benchmarks/timing.py). Bounds: batched full prompts / prefix
cache >= 2, per-pair full prompts / prefix cache >= 2; bf16 / fp32 (prefix-cached, N = 50) <= 1.0.
`test_rerank_scores_equal_on_smollm2` asserts the equal scores; the benchmark records the largest difference.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench.data.cards import load_card, load_dataset
from bench.data.splits import load_or_make_split, resolve_split_params
from bench.options import RunOptions
from bench.types import RunContext, TrainView
from benchmarks.timing import alternate, check_all, fixed_threads, median, paired_ratio

pytestmark = pytest.mark.benchmark
N, USERS, BATCH = 50, int(os.environ.get("RERANK_BENCH_USERS", "3")), 16
ROUNDS = int(os.environ.get("RERANK_BENCH_ROUNDS", "2"))
THREADS = int(os.environ.get("RERANK_BENCH_THREADS", "1"))
PER_PAIR = os.environ.get("RERANK_BENCH_PER_PAIR", "0") == "1"
PER_PAIR_BOUND, BATCHED_BOUND, BF16_BOUND = 2.0, 2.0, 1.0


def _scorer(tmp_path: Path, cache: Path, prompt: str, **settings):
    """ICL (SmolLM2-135M, `prompt`) set up on the reranker's Yes/No view of ml-100k; each user's history and N
    candidates."""
    from methods.collm import rerank_data as rd
    from methods.collm.method import ICL
    from methods.collm.settings import LLMSettings

    dataset = load_dataset(load_card("ml-100k"), cache)
    split = load_or_make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}), cache)
    data = TrainView.of(dataset, split)
    view, _ = rd.pointwise_view(data, rd.PairSpec(10, 1, 64, 32, 0))
    method = ICL(LLMSettings(prompt=prompt, **settings))
    method.fit(view, RunContext(seed=0, device="cpu", run_dir=tmp_path, cache_dir=cache, backbone="lightgcn",
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


MODES = {"prefix_cache": (True, BATCH), "batched_full": (False, BATCH)} | (
    {"per_pair_full": (False, 1)} if PER_PAIR else {})


@pytest.mark.parametrize("template", ["tallrec", "rerank"])
def test_rerank_prefix_cache_vs_full_prompts_pairs_per_second(benchmark, tmp_path, bench_cache, template):
    """Each mode scores every user's N candidates once per round, in rotating order. `tallrec`: TALLRec's prompt
    (the title, then '? Answer with "Yes" or "No". #Answer:'); `rerank`: the rerankers' default (the title last)."""
    from methods.collm import model as cm

    prompt = {"tallrec": cm.TEXT_PROMPT, "rerank": cm.TEXT_RERANK_PROMPT}[template]
    with fixed_threads(THREADS):
        method, work = _scorer(tmp_path, bench_cache, prompt)
        for cached, batch in MODES.values():  # warm-up: every mode on the first user
            _run(method, work[:1], cached, batch)
        seconds, outputs = alternate({label: (lambda _, c=c, b=b: _run(method, work, c, b))
                                      for label, (c, b) in MODES.items()}, ROUNDS, warmup=0)
    pairs = sum(len(items) for _, items, _ in work)
    encoded = method.builder.encode(work[0][2], work[0][1][0])
    diff = max(float((outputs["prefix_cache"][0] - outputs[k][0]).abs().max()) for k in MODES if k != "prefix_cache")
    figures = [("speedup_vs_batched", paired_ratio(seconds, "batched_full", "prefix_cache"), BATCHED_BOUND, False)]
    if PER_PAIR:
        figures.append(("speedup_vs_per_pair", paired_ratio(seconds, "per_pair_full", "prefix_cache"), PER_PAIR_BOUND,
                        False))
    check_all(benchmark, figures,
        model="SmolLM2-135M-Instruct", template=template, n_candidates=N, users=len(work), pairs=pairs,
        rounds=ROUNDS, batch_size=BATCH, prompt_tokens=len(encoded.ids), prefix_tokens=encoded.prefix_len,
        **{f"pairs_per_cpu_s_{k}": pairs / median(v) for k, v in seconds.items()},
        ms_cpu_per_user_prefix_cache=1000 * median(seconds["prefix_cache"]) / len(work), max_abs_diff=diff)


def test_rerank_scores_equal_on_smollm2(tmp_path, bench_cache):
    """The prefix-cached Yes/No logits of one user's N candidates equal each pair's full prompt scored alone."""
    from methods.collm import model as cm

    with fixed_threads(THREADS):
        method, work = _scorer(tmp_path, bench_cache, cm.TEXT_RERANK_PROMPT)
        fast = _run(method, work[:1], True, BATCH)
        single = _run(method, work[:1], False, 1)
    assert fast.shape == (N, 2)
    assert float((fast - single).abs().max()) < 1e-4


def test_rerank_bf16_vs_fp32_ms_per_user(benchmark, tmp_path, bench_cache):
    """The rerankers' CPU setting (`precision: bf16`, bfloat16 autocast) against float32, prefix-cached, every
    user at N = 50 and at the CPU default's N = 20 (the first 20 of the same candidates), in rotating order;
    with how far bf16 moves the order: Spearman correlation of each user's P(Yes) with fp32's and the overlap of
    their top 10."""
    import torch
    from scipy.stats import spearmanr

    from methods.collm import model as cm

    with fixed_threads(THREADS):
        fp32, work = _scorer(tmp_path / "fp32", bench_cache, cm.TEXT_RERANK_PROMPT)
        bf16, _ = _scorer(tmp_path / "bf16", bench_cache, cm.TEXT_RERANK_PROMPT, precision="bf16")
        methods = {"fp32": fp32, "bf16": bf16}
        for method in methods.values():  # warm-up
            _run(method, work[:1], True, BATCH)
        contenders = {f"{p}_n{n}": (lambda _, m=m, n=n: _run(m, [(u, i[:n], h) for u, i, h in work], True, BATCH))
                      for p, m in methods.items() for n in (N, 20)}
        seconds, outputs = alternate(contenders, ROUNDS, warmup=0)
    rho, top = [], []
    for k in range(len(work)):
        a, b = (outputs[f"{p}_n{N}"][0][k * N:(k + 1) * N] for p in ("fp32", "bf16"))
        pa, pb = torch.softmax(a.float(), -1)[:, 0].numpy(), torch.softmax(b.float(), -1)[:, 0].numpy()
        rho.append(spearmanr(pa, pb).statistic)
        top.append(len(set(np.argsort(-pa)[:10]) & set(np.argsort(-pb)[:10])) / 10)
    ms = {f"ms_cpu_per_user_{k}": 1000 * median(v) / len(work) for k, v in seconds.items()}
    check_all(benchmark, [("bf16_over_fp32_n50", paired_ratio(seconds, f"bf16_n{N}", f"fp32_n{N}"), BF16_BOUND, True)],
              users=len(work), rounds=ROUNDS, batch_size=BATCH, **ms, spearman_min=float(min(rho)),
              top10_overlap_mean=float(np.mean(top)))
