"""CSFT training throughput on this machine (pytest-benchmark; not in the default run).

    .venv/bin/python -m pytest benchmarks/test_llm2rec_speed.py -m benchmark --benchmark-enable -s

Tokens/s of CSFT training steps on SmolLM2-135M (dynamic padding to each batch's longest sequence),
achieved GFLOP/s (6 x parameters x tokens) against the machine's measured fp32 matmul peak.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Practical fp32 peak: a large square matmul with all threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def test_csft_throughput(tmp_path, benchmark):
    import torch

    from bench.data import assets
    from bench.data.cards import load_card, load_dataset
    from bench.data.splits import load_or_make_split, resolve_split_params
    from methods.llm2rec.method import item_titles, training_sequences
    from methods.llm2rec.stages import build_csft_examples, csft_throughput

    cache = tmp_path / "cache"
    dataset = load_dataset(load_card("ml-100k"), cache)
    split = load_or_make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}), cache)
    examples = build_csft_examples(training_sequences(split.train, item_titles(dataset)), 10)
    model_dir = assets.smollm2_dir(Path("datasets/cache"))  # the converted model, shared with runs
    result = benchmark.pedantic(csft_throughput, args=(model_dir, examples[::97], 6, 8),
                                kwargs={"max_length": 160, "device": "cpu"}, rounds=1, iterations=1)
    peak = matmul_peak_gflops()
    benchmark.extra_info.update({**result, "matmul_peak_gflops": peak, "threads": torch.get_num_threads()})
    print(f"\nCSFT SmolLM2-135M on CPU ({torch.get_num_threads()} threads): {result['tokens_per_s']:.0f} tokens/s, "
          f"{result['gflops_per_s']:.1f} GFLOP/s achieved vs {peak:.1f} GFLOP/s fp32 matmul peak "
          f"({100 * result['gflops_per_s'] / peak:.0f}%), {result['steps_timed']} steps, batch 8")
    assert result["tokens"] > 0
