"""Speed benchmarks (pytest-benchmark; not in the default test run).

    .venv/bin/python -m pytest benchmarks -m benchmark --benchmark-enable -s

1. One LightGCN training epoch under the harness vs inside RecBole's own `run_recbole`, same config
   and same split files: both time RecBole's `Trainer._train_epoch`, so the difference is what the
   harness adds around it (target: within 5%).
2. Text encoding of ml-100k items: first run (cold cache) vs second run (cached).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from bench.data.cards import load_card, load_dataset
from bench.data.splits import load_or_make_split, resolve_split_params
from methods.backbones.cf import RecBoleCF, resolve_backbone_config

pytestmark = pytest.mark.benchmark
EPOCHS = 6
ROUNDS = 3


def _split(cache: Path):
    dataset = load_dataset(load_card("ml-100k"), cache)
    return dataset, load_or_make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}), cache)


def _time_train_epochs(monkeypatch) -> dict[str, list[float]]:
    """Wrap RecBole's Trainer._train_epoch once; durations go to the list named by sink['current']."""
    from recbole.trainer import Trainer

    original = Trainer._train_epoch
    sink: dict = {"current": "harness", "harness": [], "run_recbole": []}

    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        result = original(self, *args, **kwargs)
        sink[sink["current"]].append(time.perf_counter() - start)
        return result

    monkeypatch.setattr(Trainer, "_train_epoch", wrapper)
    return sink


def test_lightgcn_epoch_harness_vs_run_recbole(tmp_path, benchmark, monkeypatch):
    """Alternate harness and run_recbole rounds (the machine's speed drifts), compare epoch medians."""
    from methods.backbones import recbole_compat

    recbole_compat.apply()
    from recbole.quick_start import run_recbole

    _, split = _split(tmp_path / "cache")
    config = resolve_backbone_config("lightgcn", {"epochs": EPOCHS, "train_batch_size": 2048,
                                                  "stopping_step": 100})
    sink = _time_train_epochs(monkeypatch)
    monkeypatch.chdir(tmp_path)  # run_recbole writes ./log and ./log_tensorboard
    for round_ in range(ROUNDS):
        sink["current"] = "harness"
        before = len(sink["harness"])
        cf = RecBoleCF("lightgcn", config, 0, "cpu", tmp_path / f"harness{round_}")
        cf.prepare(split)
        cf.build_model()
        cf.train()
        del sink["harness"][before]  # first epoch of a round warms up
        sink["current"] = "run_recbole"
        before = len(sink["run_recbole"])
        recbole_cfg = cf.recbole_config_dict()
        recbole_cfg["checkpoint_dir"] = str(tmp_path / f"recbole{round_}")
        run_recbole(model="LightGCN", dataset="bench", config_dict=recbole_cfg)
        del sink["run_recbole"][before]
    harness_times, recbole_times = sink["harness"], sink["run_recbole"]
    harness = statistics.median(harness_times)
    recbole = statistics.median(recbole_times)
    ratio = harness / recbole
    benchmark.extra_info.update({"harness_epoch_s": harness, "run_recbole_epoch_s": recbole, "ratio": ratio,
                                 "epochs_each": len(harness_times)})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\nLightGCN epoch (median of {len(harness_times)} epochs over {ROUNDS} alternating rounds): "
          f"harness {harness:.3f}s, run_recbole {recbole:.3f}s, ratio {ratio:.3f}")
    assert len(harness_times) == len(recbole_times) == ROUNDS * (EPOCHS - 1)


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
