"""Contract every CF method inherits: fit on tiny data, score shape, no training item recommended,
same seed same result, settings round-trip, unknown settings rejected."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from bench.backbones import backbone_settings
from bench.catalog import METHODS
from bench.data.splits import make_split, resolve_split_params
from bench.eval.ranking import rank_users
from tests.conftest import FitCall, score


class FakeEncoder:
    """Deterministic pseudo text embeddings (no model): enough to exercise the init path."""

    name, dim = "fake", 48

    def fingerprint(self) -> str:
        return "fake"

    def parameter_count(self) -> int:
        return 1234


def _fit(method_name, backbone, dataset, tmp_path, seed=0):
    split = make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    config = backbone_settings(backbone, {"epochs": 2, "embedding_size": 16, "train_batch_size": 64,
                                                "stopping_step": 1})
    method = METHODS.create(method_name)
    rng = np.random.default_rng(7)
    text = rng.normal(size=(len(dataset.item_ids), FakeEncoder.dim)).astype(np.float32)
    ctx = FitCall(dataset=dataset, split=split, seed=seed, device="cpu", run_dir=tmp_path / method_name,
                     cache_dir=tmp_path, backbone=backbone, backbone_settings=config, encoder=FakeEncoder(),
                     embed_items=lambda: text)
    ctx.run(method)
    return method, split, ctx


@pytest.mark.parametrize("method_name,backbone", [
    ("random", "mf"), ("random", "lightgcn"), ("random", "sgl"), ("random", "sgcl"),
    ("llminit-var", "lightgcn"), ("llminit-full", "mf"), ("llminit-pca", "sgcl"),
])
def test_fit_score_contract(tiny_dataset, tmp_path, method_name, backbone):
    method, split, ctx = _fit(method_name, backbone, tiny_dataset, tmp_path)
    users = np.sort(split.test["user"].unique())
    scores = score(method, users)
    assert scores.shape == (len(users), len(tiny_dataset.item_ids))
    assert np.isfinite(scores).all()
    position = {item: i for i, item in enumerate(tiny_dataset.item_ids)}
    seen = pd.concat([split.train, split.valid])
    exclude = {u: g.map(position).to_numpy() for u, g in seen.groupby("user")["item"]}
    top = rank_users(lambda batch: score(method, batch), users, tiny_dataset.item_ids, {}, exclude)
    for row, user in enumerate(users):
        assert not set(top[row]) & set(exclude[user]), "a training item was recommended"
    counts = method.parameter_counts()
    assert counts.trainable > 0
    if method_name.startswith("llminit"):
        assert counts.frozen_offline == 1234
        size = FakeEncoder.dim if method_name == "llminit-full" else 16
        assert ctx.extra["effective_embedding_size"] == size


def test_same_seed_same_scores(tiny_dataset, tmp_path):
    a, split, _ = _fit("llminit-var", "lightgcn", tiny_dataset, tmp_path / "a")
    b, _, _ = _fit("llminit-var", "lightgcn", tiny_dataset, tmp_path / "b")
    users = np.sort(split.test["user"].unique())
    np.testing.assert_array_equal(score(a, users), score(b, users))


def test_llminit_init_reaches_the_model(tiny_dataset, tmp_path):
    """Before training, item rows equal the selected text dimensions (mapped through RecBole ids)."""
    from bench.catalog import METHODS

    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    config = backbone_settings("mf", {"epochs": 1, "embedding_size": 16})
    text = np.random.default_rng(1).normal(size=(len(tiny_dataset.item_ids), 48)).astype(np.float32)
    method = METHODS.create("llminit-uni")
    ctx = FitCall(dataset=tiny_dataset, split=split, seed=0, device="cpu", run_dir=tmp_path, cache_dir=tmp_path,
                     backbone="mf", backbone_settings=config, encoder=FakeEncoder(), embed_items=lambda: text)
    from methods.backbones.cf import RecBoleCF

    cf = RecBoleCF("mf", config, 0, "cpu", tmp_path / "work")
    cf.prepare(ctx.data)
    cf.build_model()
    method.start_fit(ctx.data)
    users, items = method.initial_embeddings(ctx.ctx, cf)
    cf.set_embeddings(tiny_dataset.user_ids, users, tiny_dataset.item_ids, items)
    rows = cf.token_index("item_id", tiny_dataset.item_ids)
    weight = cf.model.item_embedding.weight.detach().numpy()
    np.testing.assert_allclose(weight[rows], text[:, ::3][:, :16], rtol=1e-6)


def test_settings_round_trip_and_unknown_rejected():
    cls = METHODS.get("llminit-var")
    settings = cls.Settings(user_init="max")
    assert cls.Settings.model_validate(settings.model_dump()) == settings
    with pytest.raises(ValidationError, match="opt"):
        cls.Settings.model_validate({"opt": "var"})  # LLMInit's ignored README flag must be an error


def test_every_registered_method_resolves():
    for name in METHODS.names():
        assert METHODS.create(name).name == name


def _frames(obj, seen=None):
    """Every DataFrame / Series reachable from a TrainView's fields (dataclasses, dicts, lists)."""
    import dataclasses

    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (pd.DataFrame, pd.Series)):
        yield obj
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _frames(getattr(obj, f.name), seen)
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _frames(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _frames(value, seen)


@pytest.mark.parametrize("split_name", ["temporal_loo", "random_loo", "half_history", "cold_users", "longtail"])
def test_train_view_and_recbole_files_hold_no_test_interaction(tiny_dataset, tmp_path, split_name):
    """What `fit` receives (the TrainView) and what RecBole reads hold no test interaction."""
    from bench.types import TrainView
    from methods.backbones.cf import write_atomic_split

    params = {"empty_segments": "allow"} if split_name == "longtail" else {}
    split = make_split(tiny_dataset, split_name, resolve_split_params(split_name, params))
    view = TrainView.of(tiny_dataset, split)
    assert not hasattr(view, "test") and not hasattr(view.split, "test")
    held = set(zip(split.test["user"], split.test["item"])) - set(zip(split.train["user"], split.train["item"])) \
        - set(zip(split.valid["user"], split.valid["item"]))
    assert held, "the split must hold test pairs for this test to mean anything"
    n_frames = 0
    for frame in _frames(view):
        if isinstance(frame, pd.DataFrame) and {"user", "item"} <= set(frame.columns):
            n_frames += 1
            assert not held & set(zip(frame["user"], frame["item"]))
    assert n_frames == 3  # train, valid, and the held-out valid users' context (empty unless cold_users)
    write_atomic_split(view, tmp_path)
    files = {p.name: pd.read_csv(p, sep="\t", dtype=str) for p in (tmp_path / "bench").glob("*.inter")}
    for name, frame in files.items():
        assert not held & set(zip(frame["user_id:token"], frame["item_id:token"])), name
    assert files["bench.test.inter"].equals(files["bench.valid.inter"])


@pytest.mark.parametrize("shots", [0, 16])
def test_fewshot_train_view_holds_no_test_pair(shots):
    """A few-shot ctr split's TrainView: `train` holds the N sampled pairs, `train_all` every training pair (the
    frame a CF encoder pre-trains on); neither, nor any other frame reachable from the view, holds a test pair
    or a valid pair outside `valid`."""
    from bench.types import TrainView
    from tests.conftest import ctr_dataset, interaction_pairs

    dataset = ctr_dataset()
    params = {"train_months": 4, "valid_months": 2, "test_months": 2, "shots": shots}
    split = make_split(dataset, "ctr_temporal", resolve_split_params("ctr_temporal", params))
    view = TrainView.of(dataset, split)
    held = interaction_pairs(split.test)
    assert held and not hasattr(view, "test") and not hasattr(view.split, "test")
    frames = [f for f in _frames(view) if isinstance(f, pd.DataFrame) and {"user", "item"} <= set(f.columns)]
    assert len(frames) == (4 if shots else 3)  # train, valid, the (empty) context, and train_all when sampled
    for frame in frames:
        assert not held & interaction_pairs(frame)
    assert not interaction_pairs(view.train_all) & interaction_pairs(split.valid)
    assert (view.train_all["timestamp"] < split.test["timestamp"].min()).all()
    assert interaction_pairs(view.train) <= interaction_pairs(view.train_all)
    assert len(view.train) == (16 if shots else len(view.train_all))
    if shots:
        full = make_split(dataset, "ctr_temporal", resolve_split_params("ctr_temporal", {**params, "shots": 0}))
        pd.testing.assert_frame_equal(view.train_all, full.train)
