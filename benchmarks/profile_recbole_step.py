"""Profile training steps of a sequential backbone (torch.profiler, one thread): where a step's time goes.

    .venv/bin/python benchmarks/profile_recbole_step.py sasrec on 10    # anomaly detection on (RecBole as imported)
    .venv/bin/python benchmarks/profile_recbole_step.py gru4rec off 10  # off (the harness)

Same configuration as benchmarks/test_recbole_epoch.py, but on all training positions; the first pass over
the steps warms up, the second is profiled. Prints seconds per step and the top operators by self time.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class FirstBatches:
    """The first `n` batches of a RecBole train loader, as `Trainer._train_epoch` iterates a loader."""

    shuffle = True

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self):
        return self.n


def main(backbone: str, anomaly: str, steps: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.test_recbole_epoch import SETTINGS, sequential_trainer

    torch.set_num_threads(1)
    settings = dict(SETTINGS, train_targets_per_user=None)
    with tempfile.TemporaryDirectory() as tmp:
        seq, trainer = sequential_trainer(backbone, Path(tmp), Path("datasets/cache"), settings)
        torch.autograd.set_detect_anomaly(anomaly == "on")
        batches = FirstBatches(seq.train_data, steps)
        trainer._train_epoch(batches, 0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            trainer._train_epoch(batches, 1)
            seconds = time.perf_counter() - start
    print(f"{backbone}, anomaly detection {anomaly}: {steps} steps in {seconds:.2f}s = {seconds / steps:.3f}s/step "
          f"({len(seq.train_data)} steps per epoch)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10)
