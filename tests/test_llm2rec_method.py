"""LLM2Rec as a harness method: stages trained on training data only, cached, feeding SASRec."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.backbones import backbone_settings
from bench.catalog import METHODS
from bench.data.splits import make_split, resolve_split_params
from methods.llm2rec.method import item_titles, training_sequences
from tests.conftest import FitCall, score
from tests.test_llm2rec_stages import tiny_dir as tiny_decoder  # noqa: F401  (fixture)

TINY = {"max_steps": 2, "batch_size": 4, "grad_accum": 1, "warmup_steps": 0, "max_length": 64, "progress": False}


def _ctx(dataset, tmp_path, cache):
    split = make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    config = backbone_settings("sasrec", {"epochs": 1, "embedding_size": 16, "train_batch_size": 64})
    return FitCall(dataset=dataset, split=split, seed=0, device="cpu", run_dir=tmp_path, cache_dir=cache,
                      backbone="sasrec", backbone_settings=config)


def test_csft_sequences_come_from_training_only(tiny_dataset):
    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    titles = item_titles(tiny_dataset)
    sequences = training_sequences(split.train, titles)
    users = sorted(split.train["user"].unique())
    for user, seq in zip(users, sequences):
        assert seq == titles.reindex(split.train[split.train["user"] == user]
                                     .sort_values("timestamp")["item"]).tolist()
    assert sum(len(s) for s in sequences) == len(split.train)
    # no user's own held-out (valid / test) item appears in that user's CSFT sequence (titles are unique here)
    assert titles.is_unique
    held_out = pd.concat([split.valid, split.test]).groupby("user")["item"].apply(lambda s: set(titles[s]))
    assert len(held_out) == len(users)
    for user, seq in zip(users, sequences):
        assert not held_out.get(user, set()) & set(seq), user


def test_llm2rec_method_end_to_end_and_cached(tiny_dataset, tiny_decoder, tmp_path):  # noqa: F811
    cls = METHODS.get("llm2rec")
    settings = METHODS.settings("llm2rec", {"base_model": str(tiny_decoder), "csft": TINY, "mntp": TINY,
                                            "ic": {**TINY, "batch_size": 8}})
    cache = tmp_path / "cache"
    method = cls(settings, name="llm2rec")
    ctx = _ctx(tiny_dataset, tmp_path / "run1", cache)
    ctx.run(method)
    users = np.sort(ctx.split.test["user"].unique())
    assert score(method, users).shape == (len(users), len(tiny_dataset.item_ids))
    info = ctx.extra["llm2rec"]
    assert info["stages"] == ["csft", "mntp", "ic"] and info["llm_tokens_seen"] > 0
    assert method.parameter_counts().frozen_offline > 0
    folders = sorted(p.name for p in (cache / "llm2rec").iterdir() if not p.name.startswith("."))
    assert [f.split("-")[0] for f in folders] == ["csft", "ic", "mntp"]
    # a second seed reuses every stage: no new folders, no training time
    ctx2 = _ctx(tiny_dataset, tmp_path / "run2", cache)
    ctx2.seed = 1
    ctx2.run(cls(settings))
    assert sorted(p.name for p in (cache / "llm2rec").iterdir() if not p.name.startswith(".")) == folders
    assert ctx2.timings["llm_stages"] < ctx.timings["llm_stages"]


def test_untrained_rows_differ(tiny_dataset, tiny_decoder, tmp_path):  # noqa: F811
    matrices = {}
    for name in ("llm-causal", "llm-bidir"):
        method = METHODS.create(name, {"base_model": str(tiny_decoder)})
        ctx = _ctx(tiny_dataset, tmp_path / name, tmp_path / "cache")
        ctx.run(method)
        matrices[name] = method.item_matrix(ctx)
        assert ctx.extra["llm2rec"]["stages"] == []
    assert matrices["llm-causal"].shape == matrices["llm-bidir"].shape
    assert not np.allclose(matrices["llm-causal"], matrices["llm-bidir"])
