"""Backbones select checkpoints on the protocol the harness tests with.

The harness ranks test over the whole catalogue with each user's train + valid items masked
(bench/eval/ranking.py). RecBole's validation must do the same one phase earlier: each user's training
items masked. RecBole's general models did so already; its sequential models masked nothing, so the harness
extends their validation loader (methods/backbones/sequential.py `masked_full_sort_loader`). Here the score
RecBole reports on valid is checked against an independent numpy computation of the masked metric of the
same trained model, for SASRec, GRU4Rec and MF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.backbones import backbone_settings
from bench.data.splits import make_split, resolve_split_params
from bench.types import TrainView
from methods.backbones.cf import RecBoleCF
from methods.backbones.sequential import RecBoleSeq, user_sequences

KS = (10, 20)


def masked_metrics(scores: np.ndarray, targets: np.ndarray, masked: list[np.ndarray]) -> dict[str, float]:
    """Recall / NDCG / Hit / MRR at 10 and 20 with one positive per row, from scores alone (numpy): the
    target's rank is the number of unmasked items scored strictly higher."""
    scores = scores.astype(np.float64).copy()
    for row, items in enumerate(masked):
        scores[row, items] = -np.inf
    target_scores = scores[np.arange(len(targets)), targets]
    rank = (scores > target_scores[:, None]).sum(axis=1)
    out = {}
    for k in KS:
        hit = rank < k
        out[f"recall@{k}"] = out[f"hit@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean())
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / (rank + 1.0), 0.0).mean())
    return out


def recbole_valid(cf, decimals: int = 12) -> dict[str, float]:
    """RecBole's own validation of the trained model (its Trainer.evaluate on the backbone's valid loader),
    with more decimals than the 4 it reports while training (`metric_decimal_place`)."""
    from recbole.utils import get_trainer

    cf.config["metric_decimal_place"] = decimals
    try:
        with cf._log_to_run_dir():
            trainer = get_trainer(cf.config["MODEL_TYPE"], cf.config["model"])(cf.config, cf.model)
            return {k: float(v) for k, v in trainer.evaluate(cf.valid_data, load_best_model=False).items()}
    finally:
        cf.config["metric_decimal_place"] = 4


def _trained(backbone: str, dataset, split, tmp_path):
    overrides = {"epochs": 3, "embedding_size": 16, "train_batch_size": 64, "stopping_step": 3}
    if backbone == "gru4rec":
        overrides.update(hidden_size=16, learning_rate=1e-2)
    config = backbone_settings(backbone, overrides)
    cls = RecBoleSeq if backbone in ("sasrec", "gru4rec") else RecBoleCF
    cf = cls(backbone, config, 0, "cpu", tmp_path / backbone)
    cf.prepare(TrainView.of(dataset, split))
    cf.build_model()
    return cf, cf.train()


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec", "mf"])
def test_recbole_validation_is_the_harness_masked_metric(tiny_dataset, tmp_path, backbone):
    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    cf, info = _trained(backbone, tiny_dataset, split, tmp_path)
    if isinstance(cf, RecBoleSeq):
        cf.history = user_sequences([split.train])  # validation rows see the training history only
    items = tiny_dataset.item_ids
    position = {item: i for i, item in enumerate(items)}
    users = split.valid["user"].to_numpy()
    targets = split.valid["item"].map(position).to_numpy()
    train_items = {u: g.map(position).to_numpy() for u, g in split.train.groupby("user")["item"]}
    scores = cf.score(users, items)
    own = masked_metrics(scores, targets, [train_items[u] for u in users])

    recbole = recbole_valid(cf)
    assert recbole.keys() == own.keys()
    assert recbole == pytest.approx(own, abs=1e-9)
    # what RecBole reported while training (4 decimals) is the reloaded checkpoint's masked score
    assert info["best_valid"] == pytest.approx({k: round(v, 4) for k, v in own.items()}, abs=1e-12)
    unmasked = masked_metrics(scores, targets, [np.zeros(0, dtype=np.int64)] * len(users))
    assert unmasked != own  # the mask matters on this data: the check above could tell the two apart


def test_sequential_mask_is_each_users_training_items(tiny_dataset, tmp_path):
    """The loader's history index holds, per valid row, exactly the user's training items (never the target),
    including items older than the capped training rows reach."""
    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    config = backbone_settings("sasrec", {"epochs": 1, "embedding_size": 8, "max_len": 3,
                                                "train_targets_per_user": 1})
    cf = RecBoleSeq("sasrec", config, 0, "cpu", tmp_path)
    cf.prepare(TrainView.of(tiny_dataset, split))
    (interaction, (rows, cols), _, targets), = list(cf.valid_data)
    user_tokens = cf.dataset.field2id_token["user_id"]
    item_tokens = cf.dataset.field2id_token["item_id"]
    masked = pd.DataFrame({"user": user_tokens[interaction["user_id"].numpy()[rows.numpy()]],
                           "item": item_tokens[cols.numpy()]})
    expected = split.train[split.train["user"].isin(user_tokens[interaction["user_id"].numpy()])]
    assert sorted(zip(masked["user"], masked["item"])) == sorted(zip(expected["user"], expected["item"]))
    assert not (cols.numpy() == targets.numpy()[rows.numpy()]).any()


def test_atomic_files_are_the_bytes_to_csv_writes(tiny_dataset, tmp_path):
    """`write_atomic_split` renders frames by plain joins where that is certain to give to_csv's bytes (RecBole's
    token ids follow the order it reads), and falls back to to_csv where not (a quoted field, a fractional time)."""
    import io

    from methods.backbones.cf import csv_lines, write_atomic_split

    def to_csv(frame: pd.DataFrame) -> str:
        out = io.StringIO()
        frame.to_csv(out, sep="\t", header=False, index=False)
        return out.getvalue()

    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    write_atomic_split(TrainView.of(tiny_dataset, split), tmp_path)
    for part in ("train", "valid"):
        frame = getattr(split, part)[["user", "item", "timestamp"]]
        assert "".join(csv_lines(frame)) == to_csv(frame)
        written = (tmp_path / "bench" / f"bench.{part}.inter").read_text()
        assert written == "user_id:token\titem_id:token\ttimestamp:float\n" + to_csv(frame)
    edge = pd.DataFrame({"user": ["a", ""], "item": ["x y", "'q'"], "timestamp": [-0.0, 2.0**52]})
    assert "".join(csv_lines(edge)) == to_csv(edge)
    for odd in (edge.assign(user=["a", 'b"c']), edge.assign(item=["x\ty", "z"]), edge.assign(timestamp=[0.5, 1.0]),
                edge.assign(timestamp=[np.nan, 1.0]), edge.assign(user=["a", None]), edge.assign(timestamp=[2.0**60, 1.0])):
        assert csv_lines(odd) is None  # to_csv writes these


# ------------------------------------------------- the harness's whole run vs RecBole's run_recbole


def import_run_recbole(monkeypatch=None):
    """`recbole.quick_start.run_recbole`. quick_start imports `ray.tune` at module level, used only by its
    hyper-parameter search (`objective_function`); ray.tune needs pyarrow, which the harness does not
    install, so an empty stand-in module is put in its place when the real one does not import."""
    import sys
    import types

    try:
        from recbole.quick_start import run_recbole
    except ImportError:
        stub = types.ModuleType("ray.tune")
        if monkeypatch is not None:
            monkeypatch.setitem(sys.modules, "ray.tune", stub)
        else:
            sys.modules["ray.tune"] = stub
        from recbole.quick_start import run_recbole
    return run_recbole


def harness_run(spec, results: Path, cache: Path, options) -> dict:
    """`bench.runner.execute`: prepare (data + split), fit, evaluate test, record."""
    from bench.records import ResultStore
    from bench.runner import execute

    return execute(spec, ResultStore(results), cache, options)


def recbole_run(spec, work: Path, out: Path, options, run_recbole) -> dict:
    """RecBole's own `run_recbole` on the split files the harness wrote (`work`/data), with the config the
    harness gave RecBole (same seed), checkpoints and RecBole's ./log under `out`."""
    import os

    from bench.backbones import BACKBONES

    cfg = RecBoleCF(spec.backbone, backbone_settings(spec.backbone, spec.backbone_settings), spec.seed, options.device,
                    work, eval_batch_size=options.eval_batch_size).recbole_config_dict()
    cfg["checkpoint_dir"] = str(out / "checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(out)  # run_recbole writes ./log/
    try:
        with RecBoleCF._RunLog(out / "recbole.log"):  # the harness's tensorboard patch wants a run log
            return run_recbole(model=BACKBONES[spec.backbone].model, dataset="bench", config_dict=cfg)
    finally:
        os.chdir(cwd)


def checkpoint_state(folder: Path) -> dict:
    import torch

    (path,) = sorted(folder.glob("*.pth"))
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]  # tensors and plain data only


@pytest.mark.slow
def test_harness_run_matches_run_recbole(tmp_path, monkeypatch):
    """A whole harness run (`bench.runner.execute`, LightGCN `random`, smoke suite: ml-100k temporal
    leave-one-out, 3 epochs) and RecBole's own `run_recbole` on the same split files, config and seed train
    the same model: equal best validation metrics and bit-identical best checkpoints.

    Test metrics are not compared: RecBole never receives the harness's test part (its test file is a
    copy of valid), so `run_recbole`'s test result is validation again; the harness scores the real test
    part itself, masking train + valid items (bench/eval/ranking.py).

    One torch thread: with two, LightGCN's sparse propagation sums in a varying order and two runs of the
    same code differ by ~3e-8 (bench/options.py)."""
    import torch

    from bench.options import RunOptions
    from bench.spec import expand, load_suite

    (spec,) = [s for s in expand(load_suite("smoke")) if s.method == "random"]
    options = RunOptions(device="cpu", threads=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        record = harness_run(spec, tmp_path / "results", tmp_path / "cache", options)
        work = tmp_path / "results" / "runs" / spec.run_id / "work"
        result = recbole_run(spec, work, tmp_path / "run_recbole", options, import_run_recbole(monkeypatch))
    finally:
        torch.set_num_threads(threads)

    training = record["method_info"]["training"]
    assert training["best_valid"] == pytest.approx(dict(result["best_valid_result"]), abs=0)
    assert training["best_valid_score"] == result["best_valid_score"]
    assert result["test_result"] == result["best_valid_result"]  # RecBole's "test" is valid again
    ours, theirs = checkpoint_state(work / "checkpoints"), checkpoint_state(tmp_path / "run_recbole" / "checkpoints")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
