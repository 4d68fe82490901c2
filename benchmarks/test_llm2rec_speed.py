"""CSFT training throughput against the machine's FLOP bound (pytest-benchmark; not in the default run).

    .venv/bin/python -m pytest benchmarks/test_llm2rec_speed.py -m benchmark --benchmark-enable -s

CSFT training steps on SmolLM2-135M (dynamic padding to each batch's longest sequence) on ml-100k sequences:
GFLOP per CPU second achieved (6 x parameters x tokens) against the floor of what the machine can do, a large
fp32 matmul's GFLOP per CPU second, both at `LLM2REC_BENCH_THREADS` torch threads (default 1). The per-token cost
is the difference of two runs on the same examples, `LONG` and `SHORT` steps (their first steps are the same
batches), so model loading and set-up cancel out; one warm-up run, then rotating rounds (benchmarks/timing.py).
Bound: achieved >= 0.3 x the matmul rate (a training step is matmuls plus attention, norms and the optimizer).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.timing import alternate, check, fixed_threads, median, timed

pytestmark = pytest.mark.benchmark
THREADS = int(os.environ.get("LLM2REC_BENCH_THREADS", "1"))
ROUNDS = int(os.environ.get("LLM2REC_BENCH_ROUNDS", "2"))
SHORT, LONG, BATCH = 2, 4, 4
FLOP_SHARE_BOUND = 0.3


def matmul_gflops_per_cpu_second(n: int = 1024, repeats: int = 8) -> float:
    """The practical fp32 rate: square matmuls, GFLOP per CPU second (at the current torch thread count)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    seconds, _ = timed(lambda: [torch.mm(a, b) for _ in range(repeats)])
    return 2 * n**3 * repeats / seconds / 1e9


def test_csft_throughput_vs_matmul_rate(tmp_path, benchmark, bench_cache):
    from bench.data import assets
    from bench.data.cards import load_card, load_dataset
    from bench.data.splits import load_or_make_split, resolve_split_params
    from methods.llm2rec.method import item_titles, training_sequences
    from methods.llm2rec.stages import build_csft_examples, csft_throughput

    dataset = load_dataset(load_card("ml-100k"), tmp_path / "cache")
    split = load_or_make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}), tmp_path / "cache")
    examples = build_csft_examples(training_sequences(split.train, item_titles(dataset)), 10)[::97]
    model_dir = assets.smollm2_dir(Path(bench_cache))  # the converted model, shared with runs

    def run(steps: int):
        return lambda _: csft_throughput(model_dir, examples, steps, BATCH, max_length=160, device="cpu")

    with fixed_threads(THREADS):
        run(1)(0)  # warm-up: imports, first load
        seconds, results = alternate({"long": run(LONG), "short": run(SHORT)}, ROUNDS, warmup=0)
        peak = median([matmul_gflops_per_cpu_second() for _ in range(3)])
    tokens = results["long"][0]["tokens"] - results["short"][0]["tokens"]  # the steps only the long run took
    assert tokens > 0 and all(r["tokens"] == results["long"][0]["tokens"] for r in results["long"])
    cpu = median([a - b for a, b in zip(seconds["long"], seconds["short"])])
    n_params = results["long"][0]["n_params"]
    achieved = 6 * n_params * tokens / cpu / 1e9
    check(benchmark, "csft_share_of_matmul_rate", achieved / peak, FLOP_SHARE_BOUND, at_most=False,
          achieved_gflops_per_cpu_s=achieved, matmul_gflops_per_cpu_s=peak, tokens_per_cpu_s=tokens / cpu,
          tokens_timed=tokens, steps_timed=LONG - SHORT, batch=BATCH, rounds=ROUNDS, n_params=n_params)
