"""Speed benchmarks (pytest-benchmark; not in the default test run).

    .venv/bin/python -m pytest benchmarks -m benchmark --benchmark-enable -s

1. What the harness costs around RecBole: a whole harness run (`bench.runner.execute`: prepared data and
   split, fit, test ranking, record) against RecBole's own `run_recbole` on the same split files, config
   and seed (LightGCN `random`, ml-100k temporal leave-one-out, the smoke suite's 3 epochs at batch 2048),
   both wall times and their ratio. Both train the same model (tests/test_backbone_protocol.py checks
   equal validation metrics and bit-identical checkpoints); the harness then ranks the real test part,
   which RecBole never receives, and writes a record.
2. Text encoding of ml-100k items: first run (cold cache) vs second run (cached).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from bench.data.cards import load_card, load_dataset
from bench.data.splits import load_or_make_split, resolve_split_params

pytestmark = pytest.mark.benchmark
ROUNDS = 3


def _split(cache: Path):
    dataset = load_dataset(load_card("ml-100k"), cache)
    return dataset, load_or_make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}), cache)


def test_whole_run_harness_vs_run_recbole(tmp_path, benchmark, monkeypatch):
    """Alternate harness and run_recbole rounds (the machine's speed drifts); medians of the wall times.
    The data set and split are prepared once first (a suite prepares them once for all its runs), so the
    harness's time is a run's: load the cached split, fit, evaluate, record."""
    import torch

    from bench.options import RunOptions
    from bench.spec import expand, load_suite
    from tests.test_backbone_protocol import harness_run, import_run_recbole, recbole_run

    run_recbole = import_run_recbole(monkeypatch)
    (spec,) = [s for s in expand(load_suite("smoke")) if s.method == "random"]
    options = RunOptions(device="cpu", threads=1)
    cache = tmp_path / "cache"
    _split(cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {"harness": [], "run_recbole": []}
    try:
        for round_ in range(ROUNDS):
            results = tmp_path / f"results{round_}"
            start = time.perf_counter()
            record = harness_run(spec, results, cache, options)
            times["harness"].append(time.perf_counter() - start)
            parts = {k: round(v, 2) for k, v in record["timings"].items()}  # where the harness's time went
            work = results / "runs" / spec.run_id / "work"
            start = time.perf_counter()
            recbole_run(spec, work, tmp_path / f"run_recbole{round_}", options, run_recbole)
            times["run_recbole"].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    harness, recbole = statistics.median(times["harness"]), statistics.median(times["run_recbole"])
    benchmark.extra_info.update({"harness_s": harness, "run_recbole_s": recbole, "ratio": harness / recbole,
                                 "rounds": ROUNDS, "all": times, "harness_parts_last_round": parts})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\nwhole run, LightGCN 3 epochs on ml-100k (median of {ROUNDS}, 1 thread): harness {harness:.1f}s, "
          f"run_recbole {recbole:.1f}s, ratio {harness / recbole:.2f}; harness parts (last round, s): {parts}")


def test_encode_first_vs_cached(tmp_path, benchmark):
    from bench.encoders import encode_items, get_encoder

    dataset, _ = _split(tmp_path / "cache")
    encoder = get_encoder("minilm", {}, "cpu", tmp_path / "cache")
    template = dataset.meta["card"]["text_template"]
    start = time.perf_counter()
    _, first = encode_items(encoder, dataset.item_text, template, tmp_path / "cache", progress=False)
    first_s = time.perf_counter() - start
    _, second = benchmark.pedantic(encode_items, args=(encoder, dataset.item_text, template, tmp_path / "cache"),
                                   kwargs={"progress": False}, rounds=5, iterations=1)
    assert not first["cache_hit"] and second["cache_hit"]
    benchmark.extra_info.update({"first_s": first_s, "n_items": len(dataset.item_ids)})
    print(f"\nencode {len(dataset.item_ids)} items with MiniLM: first {first_s:.2f}s, cached "
          f"{benchmark.stats.stats.median * 1000:.1f}ms")
