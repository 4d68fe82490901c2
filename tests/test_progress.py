"""Progress inside a run (bench.progress): what a run reports, how the console line reads, that it reaches the
terminal while the run's own output goes to its log, and that the progress file never outlives its run."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from bench import executors
from bench.options import RunOptions
from bench.progress import NO_PROGRESS, ProgressWatcher, RunProgress, active, current, describe, progress_path
from bench.records import ResultStore


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Recording(RunProgress):
    """A reporter that keeps every update (and writes nothing)."""

    def __init__(self):
        super().__init__(None)
        self.updates: list[tuple] = []

    def update(self, stage, step, total=None, unit="step", **values):
        self.updates.append((stage, step, total, unit, {k: v for k, v in values.items() if v is not None}))


def test_describe_reads_a_stage_with_its_eta():
    state = {"stage": "train", "step": 4, "total": 10, "unit": "epoch", "seconds": 20.0,
             "values": {"valid NDCG@10": 0.031234, "best": 0.0335}}
    assert describe(state) == "train epoch 4/10 valid NDCG@10 0.03123 best 0.0335 ETA 30s"
    assert describe({**state, "step": 10}) == "train epoch 10/10 valid NDCG@10 0.03123 best 0.0335"  # done: no ETA
    assert describe({"stage": "evaluate", "step": 0, "total": None, "values": {}}) == "evaluate"
    assert describe({**state, "seconds": 4000.0}).endswith("ETA 1h40m")


def test_the_file_is_throttled_but_the_last_step_always_written(tmp_path):
    clock = Clock()
    path = tmp_path / "logs" / "r.progress.json"
    reporter = RunProgress(path, clock)
    reporter.begin("csft")
    clock.now += 2
    reporter.update("csft", 1, 3, loss=2.5)
    clock.now += 0.1
    reporter.update("csft", 2, 3, loss=2.0)  # within MIN_INTERVAL_S of the last write: skipped
    assert json.loads(path.read_text())["step"] == 1
    clock.now += 0.1
    reporter.update("csft", 3, 3, loss=1.5)  # the stage's last step: written anyway
    state = json.loads(path.read_text())
    assert state["step"] == 3 and state["values"] == {"loss": 1.5} and state["seconds"] == pytest.approx(2.2)
    reporter.close()
    assert not path.exists()


def test_current_is_the_active_runs_reporter():
    reporter = Recording()
    assert current() is NO_PROGRESS
    with active(reporter):
        current().update("x", 1)
    assert current() is NO_PROGRESS and reporter.updates == [("x", 1, None, "step", {})]


def test_a_recbole_backbone_reports_each_epoch_with_its_validation_score(tiny_dataset, tmp_path):
    from bench.backbones import backbone_settings
    from bench.catalog import METHODS
    from bench.data.splits import make_split, resolve_split_params
    from tests.conftest import FitCall

    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    config = backbone_settings("lightgcn", {"epochs": 3, "embedding_size": 8, "train_batch_size": 64,
                                                  "stopping_step": 10})
    reporter = Recording()
    call = FitCall(dataset=tiny_dataset, split=split, seed=0, device="cpu", run_dir=tmp_path / "run",
                   cache_dir=tmp_path, backbone="lightgcn", backbone_settings=config, progress=reporter)
    method = METHODS.create("random")
    call.run(method)
    epochs = [u for u in reporter.updates if u[0] == "train"]
    assert [(u[1], u[2], u[3]) for u in epochs] == [(1, 3, "epoch"), (2, 3, "epoch"), (3, 3, "epoch")]
    scores = [u[4]["valid NDCG@10"] for u in epochs]
    assert [u[4]["best"] for u in epochs] == [max(scores[:k + 1]) for k in range(3)]
    assert method.report.facts["training"]["best_valid_score"] == max(scores)


def test_the_llm_training_loop_reports_steps_loss_and_validation():
    import torch

    from methods.llm.train import train_loop

    weight = torch.nn.Parameter(torch.ones(2))
    reporter = Recording()
    with active(reporter):
        train_loop([weight], lambda ps: torch.optim.SGD(ps, lr=0.1), iter([0] * 4),
                   lambda batch: (weight ** 2).sum(), steps=4, desc="csft", eval_every=2,
                   evaluate=lambda step: float((weight.detach() ** 2).sum()))
    assert [(u[0], u[1], u[2]) for u in reporter.updates] == [("csft", k, 4) for k in (1, 2, 3, 4)]
    assert "valid" not in reporter.updates[0][4] and reporter.updates[1][4]["valid"] == reporter.updates[2][4]["valid"]
    assert reporter.updates[3][4]["loss"] < reporter.updates[0][4]["loss"]


def test_the_watcher_names_each_run_in_flight(tmp_path):
    RunProgress(progress_path(tmp_path, "a")).update("train", 2, 5, unit="epoch")
    shown: list[str] = []
    watcher = ProgressWatcher(tmp_path, {"a": "ml-100k/lightgcn/random/seed0", "b": "other"}, shown.append)
    watcher.start_run("a")
    watcher.start_run("b")  # no file yet: left out of the line
    assert watcher.line() == "ml-100k/lightgcn/random/seed0: train epoch 2/5"
    watcher.end_run("a")
    assert watcher.line() == ""


def test_in_run_progress_reaches_the_terminal_while_the_run_writes_to_its_log(tmp_path, monkeypatch, capfd):
    """A run in this process has fds 1 and 2 sent to its log; the bar (on a copy of the terminal's stderr) still
    shows its epoch, and the progress file is gone once the run ends."""
    from tests.test_executors import fake_specs

    monkeypatch.setattr(executors, "WATCH_INTERVAL_S", 0.05)
    monkeypatch.setattr(executors, "prepare_shared", lambda *a, **k: None)
    (spec,) = fake_specs(1)

    def execute(spec, store, cache_dir, options=None, requested=None):
        reporter = RunProgress(progress_path(store.root, spec.run_id))
        reporter.update("train", 3, 10, unit="epoch", valid=0.5)
        print("run output")
        time.sleep(0.5)
        reporter.close()
        store.write(spec.run_id, {"status": "complete", "run_id": spec.run_id, "spec": {},
                                  "metrics": {"overall": {}}}, pd.DataFrame({"user": ["1"]}))

    monkeypatch.setattr(executors, "execute", execute)
    summary = executors.run_specs([spec], ResultStore(tmp_path), tmp_path, RunOptions(progress=True))
    out, err = capfd.readouterr()
    assert summary["done"] == 1
    assert f"{spec.label}: train epoch 3/10 valid 0.5" in err
    assert "run output" not in out + err
    assert "run output" in executors.run_log_path(tmp_path, spec.run_id).read_text()
    assert not progress_path(tmp_path, spec.run_id).exists()
