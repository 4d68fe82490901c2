"""SASRec / GRU4Rec training-epoch time before and after the harness's RecBole speed fix (pytest-benchmark;
not in the default run).

    .venv/bin/python -m pytest benchmarks/test_recbole_epoch.py -m benchmark --benchmark-enable -s

"Before" is RecBole as imported: its sine.py turns autograd anomaly detection on for the whole process.
"After" is the harness (`recbole_compat._anomaly_detection_off`). Both time RecBole's own
`Trainer._train_epoch` on the same model and batches, alternating rounds (a shared machine's speed
drifts). The numbers do not change (tests/test_recbole_compat.py checks bit-identical weights).
Profile of single steps: `python benchmarks/profile_recbole_step.py sasrec on|off 10`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark
ROUNDS = 2
# the profiled configuration: batch 512, hidden 64, max length 50, one thread, on ml-100k temporal
# leave-one-out; each user's last 10 training positions as targets (the sequential suite's CPU cap: 19
# batches); None trains on all 51.6k positions (101 batches, minutes per SASRec epoch on 2 shared cores)
SETTINGS = {"train_batch_size": 512, "embedding_size": 64, "max_len": 50, "train_targets_per_user": 10,
            "epochs": 1}


def sequential_trainer(backbone: str, work: Path, cache: Path, settings: dict | None = None):
    """(RecBoleSeq, RecBole Trainer) for `backbone` on ml-100k temporal_loo, model built, nothing trained."""
    from bench.data.cards import load_card, load_dataset
    from bench.data.splits import load_or_make_split, resolve_split_params
    from bench.types import TrainView
    from methods.backbones.cf import resolve_backbone_config
    from methods.backbones.sequential import RecBoleSeq

    dataset = load_dataset(load_card("ml-100k"), cache)
    split = load_or_make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}), cache)
    overrides = dict(settings or SETTINGS)
    if backbone == "gru4rec":
        overrides["hidden_size"] = overrides["embedding_size"]
    seq = RecBoleSeq(backbone, resolve_backbone_config(backbone, overrides), 0, "cpu", work)
    seq.prepare(TrainView.of(dataset, split))
    seq.build_model()
    from recbole.utils import get_trainer

    with seq._log_to_run_dir():
        trainer = get_trainer(seq.config["MODEL_TYPE"], seq.config["model"])(seq.config, seq.model)
    return seq, trainer


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_sequential_epoch_anomaly_detection_on_vs_off(backbone, tmp_path, benchmark):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq, trainer = sequential_trainer(backbone, tmp_path / "work", tmp_path / "cache")
        times: dict[str, list[float]] = {"before": [], "after": []}
        epoch = 0
        for _ in range(ROUNDS):
            for label, anomaly in (("before", True), ("after", False)):
                torch.autograd.set_detect_anomaly(anomaly)
                start = time.perf_counter()
                trainer._train_epoch(seq.train_data, epoch)
                times[label].append(time.perf_counter() - start)
                epoch += 1
    finally:
        torch.autograd.set_detect_anomaly(False)
        torch.set_num_threads(threads)
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    benchmark.extra_info.update({"before_epoch_s": before, "after_epoch_s": after, "speedup": before / after,
                                 "batches": len(seq.train_data), "rounds": ROUNDS})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\n{backbone} epoch ({len(seq.train_data)} batches of 512, 1 thread, median of {ROUNDS}): "
          f"anomaly detection on (RecBole as imported) {before:.1f}s, off (harness) {after:.1f}s, "
          f"speed-up {before / after:.2f}x")
    assert after < before
