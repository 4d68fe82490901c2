"""SASRec / GRU4Rec training epochs: the harness's RecBole against a plain loop (the floor) and against RecBole as
imported (pytest-benchmark; not in the default run).

    .venv/bin/python -m pytest benchmarks/test_recbole_epoch.py -m benchmark --benchmark-enable -s

Three contenders train the same model on the same batches, in rotating order after a warm-up epoch, CPU seconds
at one torch thread (benchmarks/timing.py):
- "after": RecBole's own `Trainer._train_epoch` as the harness runs it (`recbole_compat._anomaly_detection_off`);
- "plain": the floor, a plain loop over the same loader (zero_grad, `model.calculate_loss`, backward, step): what
  an epoch costs without RecBole's trainer;
- "before": RecBole as imported, whose sine.py turns autograd anomaly detection on for the whole process.
Bounds: after <= 1.10 x plain (the trainer adds nothing that matters), and before >= 1.25 x after (the fix holds;
it measured 2-3x). The numbers do not change (tests/test_recbole_compat.py checks bit-identical weights).
Profile of single steps: `python benchmarks/profile_recbole_step.py sasrec on|off 10`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.timing import alternate, check_all, fixed_threads, median, paired_ratio

pytestmark = pytest.mark.benchmark
ROUNDS = int(os.environ.get("EPOCH_BENCH_ROUNDS", "2"))
TRAINER_OVER_PLAIN_BOUND, ANOMALY_SPEEDUP_BOUND = 1.10, 1.25
# the profiled configuration: batch 512, hidden 64, max length 50, one thread, on ml-100k temporal
# leave-one-out; each user's last 10 training positions as targets (the sequential suite's CPU cap: 19
# batches); None trains on all 51.6k positions (101 batches, minutes per SASRec epoch on 2 shared cores)
SETTINGS = {"train_batch_size": 512, "embedding_size": 64, "max_len": 50, "train_targets_per_user": 10,
            "epochs": 1}


def sequential_trainer(backbone: str, work: Path, cache: Path, settings: dict | None = None):
    """(RecBoleSeq, RecBole Trainer) for `backbone` on ml-100k temporal_loo, model built, nothing trained."""
    from bench.backbones import backbone_settings
    from bench.data.cards import load_card, load_dataset
    from bench.data.splits import load_or_make_split, resolve_split_params
    from bench.types import TrainView
    from methods.backbones.sequential import RecBoleSeq

    dataset = load_dataset(load_card("ml-100k"), cache)
    split = load_or_make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}), cache)
    overrides = dict(settings or SETTINGS)
    if backbone == "gru4rec":
        overrides["hidden_size"] = overrides["embedding_size"]
    seq = RecBoleSeq(backbone, backbone_settings(backbone, overrides), 0, "cpu", work)
    seq.prepare(TrainView.of(dataset, split))
    seq.build_model()
    from recbole.utils import get_trainer

    with seq._log_to_run_dir():
        trainer = get_trainer(seq.config["MODEL_TYPE"], seq.config["model"])(seq.config, seq.model)
    return seq, trainer


def plain_epoch(model, optimizer, loader) -> float:
    """The floor: one pass over `loader` with nothing but the training step; returns the summed loss."""
    model.train()
    total = 0.0
    for interaction in loader:
        optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        loss.backward()
        optimizer.step()
        total += float(loss.item())
    return total


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_sequential_epoch_trainer_vs_plain_loop_and_anomaly_detection(backbone, tmp_path, benchmark):
    import torch

    epochs = iter(range(10**6))

    def epoch(anomaly: bool):
        def run(_):
            torch.autograd.set_detect_anomaly(anomaly)
            try:
                return trainer._train_epoch(seq.train_data, next(epochs))
            finally:
                torch.autograd.set_detect_anomaly(False)
        return run

    with fixed_threads(1):
        seq, trainer = sequential_trainer(backbone, tmp_path / "work", tmp_path / "cache")
        seconds, _ = alternate({"after": epoch(False), "plain": lambda _: plain_epoch(seq.model, trainer.optimizer,
                                                                                       seq.train_data),
                                "before": epoch(True)}, ROUNDS)
    info = {"backbone": backbone, "batches": len(seq.train_data), "rounds": ROUNDS,
            **{f"{k}_epoch_cpu_s": median(v) for k, v in seconds.items()}}
    check_all(benchmark, [
        ("trainer_over_plain_loop", paired_ratio(seconds, "after", "plain"), TRAINER_OVER_PLAIN_BOUND, True),
        ("anomaly_off_speedup", paired_ratio(seconds, "before", "after"), ANOMALY_SPEEDUP_BOUND, False)], **info)
