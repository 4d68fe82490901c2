"""Protocol points as named settings (issue 14, item 2): half_history rounding, LLMInit's random
leave-one-out, PtE without prompt caps, LLM2Rec's downstream optimiser, the CTR history / subsampling order
and TALLRec's few-shot protocol. Each test checks values, not only that a setting exists."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench.data.splits import (
    SPLIT_SETTINGS,
    dropped_count,
    load_or_make_split,
    make_split,
    resolve_split_params,
)
from bench.spec import expand, load_suite
from tests.conftest import _dataset, ctr_dataset, interaction_pairs


# --------------------------------------------------------------------------------------- half_history
def _counts_dataset():
    """Users with 4 / 5 / 6 / 7 interactions: 2 / 3 / 4 / 5 training items after leave-one-out."""
    rows = [(str(u), str(u * 10 + k), 5.0, float(1000 * u + k)) for u, n in ((1, 4), (2, 5), (3, 6), (4, 7))
            for k in range(n)]
    return _dataset("counts", rows)


def test_half_history_rounds_the_dropped_count_up_by_default():
    assert SPLIT_SETTINGS["half_history"].version == 2
    assert resolve_split_params("half_history", {})["rounding"] == "ceil"
    np.testing.assert_array_equal(dropped_count([1, 2, 3, 4, 5, 10], 0.5, "ceil"), [1, 1, 2, 2, 3, 5])
    np.testing.assert_array_equal(dropped_count([1, 2, 3, 4, 5, 10], 0.5, "floor"), [0, 1, 1, 2, 2, 5])
    assert int(dropped_count([10], 0.3, "ceil")[0]) == 3  # 0.3 x 10 is 3.0000000000000004 in floats


@pytest.mark.parametrize("rounding, kept, single", [("ceil", {"1": 1, "2": 1, "3": 2, "4": 2}, 2),
                                                    ("floor", {"1": 1, "2": 2, "3": 2, "4": 3}, 1)])
def test_half_history_keeps_and_describes_single_interaction_users(rounding, kept, single):
    dataset = _counts_dataset()
    split = make_split(dataset, "half_history", resolve_split_params("half_history", {"rounding": rounding}))
    assert split.train.groupby("user").size().to_dict() == kept  # ceil: a user with 3 training items keeps 1
    assert f"{single} of 4 evaluated users keep a single training interaction" in split.description
    assert f"rounded {'up' if rounding == 'ceil' else 'down'}" in split.description
    base = make_split(dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    assert interaction_pairs(split.train) <= interaction_pairs(base.train) and interaction_pairs(split.test) == interaction_pairs(base.test)


def test_half_history_floor_is_version_1_bit_for_bit(tiny_dataset):
    """rounding: floor reproduces what version 1 computed (the old expression)."""
    split = make_split(tiny_dataset, "half_history", resolve_split_params("half_history", {"rounding": "floor"}))
    base = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    before = base.train.groupby("user").size()
    after = split.train.groupby("user").size().reindex(before.index)
    assert (after == np.maximum(1, before - np.floor(before * 0.5)).astype(int)).all()


# ------------------------------------------------------------------- LLMInit: random leave-one-out (code)
def test_llminit_paper_profiles_use_random_leave_one_out():
    coldstart = load_suite("coldstart", "paper")
    assert coldstart.split_settings["half_history"]["base"] == "random_loo"
    assert coldstart.split_settings["half_history"]["rounding"] == "ceil"
    assert load_suite("collapse", "paper").splits == ["random_loo"]
    assert load_suite("warm", "paper").splits == ["random_loo"]
    # the CPU defaults keep their splits (their run ids do not move)
    assert load_suite("collapse").splits == ["temporal_loo"] and load_suite("warm").splits == ["temporal_loo"]
    assert "half_history" not in load_suite("coldstart").split_settings


def test_collapse_paper_runs_are_random_leave_one_out():
    specs = expand(load_suite("collapse", "paper"))
    assert specs and {s.split for s in specs} == {"random_loo"}


# ---------------------------------------------------------------------------- PtE: no prompt caps (paper)
CAPS = ("user_items", "item_users", "refine_items")


@pytest.mark.parametrize("suite", ["pte", "longtail", "pte-user"])
def test_pte_paper_profiles_lift_the_prompt_caps(suite):
    from methods.pte.method import PtESettings

    defaults = PtESettings()
    specs = [s for s in expand(load_suite(suite, "paper")) if s.method.startswith("pte")]
    assert specs
    for spec in specs:
        for key in CAPS:
            # larger than any user's items, item's users or user count of the bundled data sets (ml-1m: 6,040
            # users, 3,706 items), so nothing is cut
            assert spec.method_settings[key] >= 10_000 > getattr(defaults, key), (spec.label, key)
    # the CPU default keeps the caps
    default = [s for s in expand(load_suite(suite)) if s.method.startswith("pte")]
    assert all(s.method_settings[key] == getattr(defaults, key) for s in default for key in CAPS)
    # N(u) is a neighbourhood, not a cap: the top 10 users by overlap in the paper profiles (the paper gives no
    # k), 3 on CPU; never every overlapping user
    assert {s.method_settings["neighbours"] for s in specs} == {10}
    assert {s.method_settings["neighbours"] for s in default} == {defaults.neighbours} == {3}


# ------------------------------------------------------------------ LLM2Rec: downstream optimiser (code)
def _llm2rec_paper_backbones():
    coldstart = load_suite("coldstart", "paper")
    (part,) = [p for p in coldstart.parts if "llm2rec" in p["methods"]]
    return {"sequential": load_suite("sequential", "paper").backbone_settings,
            "transfer": load_suite("transfer", "paper").backbone_settings,
            "coldstart part": part["backbone_settings"]}


def test_llm2rec_paper_profiles_use_adamw_500_epochs_patience_20():
    for where, settings in _llm2rec_paper_backbones().items():
        assert settings["learner"] == "adamw", where
        assert (settings["epochs"], settings["stopping_step"]) == (500, 20), where
    # the CPU defaults keep Adam (no learner set) and their caps
    assert "learner" not in load_suite("sequential").backbone_settings


def test_llm2rec_paper_runs_resolve_the_learner():
    """Needs the backbone setting `learner` (methods/backbones/cf.py)."""
    specs = expand(load_suite("sequential", "paper"))
    assert {s.backbone_settings["learner"] for s in specs} == {"adamw"}
    assert {s.backbone_settings["epochs"] for s in specs} == {500}


# ----------------------------------------------------------------------------------- CTR: ctr_temporal
def ctr(dataset=None, **over) -> object:
    params = resolve_split_params("ctr_temporal", {"train_months": 4, "valid_months": 2, "test_months": 2,
                                                   **over})
    return make_split(dataset or ctr_dataset(), "ctr_temporal", params)


def _histories(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(json.loads(h)) for h in frame["history"]]


def test_ctr_defaults_follow_protocols():
    cls = SPLIT_SETTINGS["ctr_temporal"]
    params = resolve_split_params("ctr_temporal", {})
    assert cls.version == 2
    assert (params["history"], params["shots"], params["shots_seed"]) == ("pair", 0, 0)


def test_ctr_pair_history_is_every_earlier_positive_of_the_window():
    """A test pair's history: the user's positives of train, valid and test strictly earlier, last 10, even
    when the test pairs that held them were subsampled away."""
    dataset = ctr_dataset()
    full = ctr(dataset)
    split = ctr(dataset, max_test_users=4, max_pairs_per_test_user=2, max_valid_users=3)
    window = pd.concat([full.train, full.valid, full.test])
    pos = window[window["label"] == 1]
    checked = 0
    for row, hist in zip(split.test.itertuples(), _histories(split.test)):
        earlier = pos[(pos["user"] == row.user) & (pos["timestamp"] < row.timestamp)]
        expected = tuple(earlier.sort_values(["timestamp", "item"])["item"].to_numpy()[-10:])
        assert hist == expected
        checked += len(hist) > 0
    assert checked  # some history is not empty
    # window_start: frozen at the window's start (train + valid positives), one history per user
    frozen = ctr(dataset, history="window_start")
    for user, group in frozen.test.groupby("user"):
        before = pos[(pos["user"] == user) & (pos["timestamp"] <= frozen.valid["timestamp"].max())]
        expected = json.dumps([str(i) for i in before.sort_values(["timestamp", "item"])["item"].to_numpy()[-10:]],
                              separators=(",", ":"))
        assert set(group["history"]) == {expected}


def test_ctr_test_histories_do_not_depend_on_max_valid_users():
    dataset = ctr_dataset()
    base = ctr(dataset)
    for limit in (1, 3):
        sub = ctr(dataset, max_valid_users=limit)
        assert sub.valid["user"].nunique() == limit < base.valid["user"].nunique()
        pd.testing.assert_frame_equal(sub.test.reset_index(drop=True), base.test.reset_index(drop=True))
    # with a subsampled test part too, the test sample and its histories stay those of max_valid_users 0
    a = ctr(dataset, max_test_users=4, max_pairs_per_test_user=3)
    b = ctr(dataset, max_test_users=4, max_pairs_per_test_user=3, max_valid_users=2)
    pd.testing.assert_frame_equal(a.test.reset_index(drop=True), b.test.reset_index(drop=True))
    # the valid users lost are not lost from the test histories: some test history holds a valid positive
    positives = base.valid[base.valid["label"] == 1]
    valid_pos = set(zip(positives["user"], positives["item"]))
    dropped = set(base.valid["user"]) - set(ctr(dataset, max_valid_users=1).valid["user"])
    assert any((u, i) in valid_pos for u, h in zip(b.test["user"], _histories(b.test)) for i in h if u in dropped)


def test_ctr_history_column_matches_the_unsampled_histories():
    """Without subsampling, the saved histories are what bench.eval.pointwise.histories computes from parts."""
    from bench.eval.pointwise import histories

    for mode in ("pair", "window_start"):
        split = ctr(history=mode)
        for part in ("train", "valid", "test"):
            assert histories(split, part).histories == _histories(getattr(split, part)), (mode, part)


def test_pointwise_histories_use_the_saved_column():
    from bench.eval.pointwise import histories

    split = ctr(shots=10, max_valid_users=2, max_test_users=4, max_pairs_per_test_user=2)
    for part in ("train", "valid", "test"):
        assert histories(split, part).histories == _histories(getattr(split, part)), part


def test_ctr_shots_sample_training_pairs_per_seed_and_keep_the_test_sample():
    dataset = ctr_dataset()
    full = ctr(dataset, max_test_users=5, max_pairs_per_test_user=4)
    samples = [ctr(dataset, max_test_users=5, max_pairs_per_test_user=4, shots=16, shots_seed=s) for s in (0, 1, 2)]
    for split in samples:
        assert len(split.train) == 16 and interaction_pairs(split.train) <= interaction_pairs(full.train)
        # the same fixed test (and valid) sample for every few-shot seed, and as with every training pair
        pd.testing.assert_frame_equal(split.test.reset_index(drop=True), full.test.reset_index(drop=True))
        pd.testing.assert_frame_equal(split.valid.reset_index(drop=True), full.valid.reset_index(drop=True))
        # a sampled pair keeps the history it has among all training pairs
        merged = split.train.merge(full.train, on=["user", "item"], suffixes=("", "_full"))
        assert len(merged) == 16 and (merged["history"] == merged["history_full"]).all()
        assert "16 random training pairs" in split.description
    assert len({frozenset(interaction_pairs(s.train)) for s in samples}) == 3  # one sample per seed
    again = ctr(dataset, max_test_users=5, max_pairs_per_test_user=4, shots=16, shots_seed=1)
    assert again.content_hash == samples[1].content_hash  # seeded
    assert len(ctr(dataset, shots=10**6).train) == len(full.train)  # more shots than pairs: every pair


def test_ctr_split_with_histories_round_trips_through_disk(tmp_path):
    params = resolve_split_params("ctr_temporal", {"train_months": 4, "valid_months": 2, "test_months": 2,
                                                   "shots": 12, "max_test_users": 5})
    dataset = ctr_dataset()
    made = load_or_make_split(dataset, "ctr_temporal", params, tmp_path)
    again = load_or_make_split(dataset, "ctr_temporal", params, tmp_path)
    assert made.content_hash == again.content_hash == make_split(dataset, "ctr_temporal", params).content_hash
    assert list(again.test.columns) == ["user", "item", "rating", "timestamp", "label", "segment", "history"]
    assert _histories(again.test) == _histories(made.test) and "[]" in set(again.train["history"])


def test_ctr_segments_count_the_full_training_window():
    """Warm / cold pair segments do not depend on the few-shot sample (16 pairs would make nearly all cold)."""
    dataset = ctr_dataset()
    assert (ctr(dataset, shots=4).test["segment"].to_numpy() == ctr(dataset).test["segment"].to_numpy()).all()
    assert ctr(dataset).test["segment"].eq("warm").any()


def test_ctr_suite_is_tallrecs_few_shot_protocol():
    suite = load_suite("ctr")
    specs = expand(suite)
    llm = {"tallrec", "collm-mf", "collm-lightgcn", "collm-sasrec", "collm-din"}
    cf = {"mf-ctr", "lightgcn-ctr", "sasrec-ctr", "din"}
    shots = {}
    for spec in specs:
        shots.setdefault(spec.method, set()).add(spec.split_settings["shots"])
        # one few-shot sample per run seed
        assert spec.split_settings["shots_seed"] == spec.seed or spec.split_settings["shots"] == 0
        # one test sample for every row: the settings that draw it are the same everywhere
        assert {k: spec.split_settings[k] for k in ("seed", "max_test_users", "max_pairs_per_test_user",
                                                    "max_valid_users")} == {
            "seed": 0, "max_test_users": 128, "max_pairs_per_test_user": 8, "max_valid_users": 0}
    assert all(shots[m] == {16, 64, 256} for m in llm)
    assert all(shots[m] == {0, 16, 64, 256} for m in cf)
    assert shots["icl"] == {0}
    assert {s.seed for s in specs if s.method in llm} == {0, 1, 2}
    assert all(s.method_settings["max_train_pairs"] == 0 for s in specs if s.method in llm)
    for quoted in ("67.24 / 67.48 / 71.98", "50.43 / 50.48 / 52.25", "TALLRec paper"):
        assert quoted in suite.reference and quoted not in suite.notes  # a block of its own, never a row
    paper = expand(load_suite("ctr", "paper"))
    assert {s.split_settings["shots"] for s in paper} == {0} and {s.dataset for s in paper} == {"ml-1m"}
    assert {s.split_settings["history"] for s in paper} == {"pair"}


@pytest.mark.slow
def test_ctr_suite_test_sample_is_large_enough_on_ml100k():
    """The CPU default's fixed test sample: >= 500 pairs of >= 100 users, both classes well represented
    (the 95% user-bootstrap interval of AUC is about +-0.035 at this size)."""
    from bench.data.cards import load_card, prepare_dataset

    (spec, *_) = expand(load_suite("ctr"))
    dataset = prepare_dataset(load_card("ml-100k", {"min_rating": None, "kcore": 0}))
    split = make_split(dataset, "ctr_temporal", spec.split_settings)
    assert len(split.test) >= 500 and split.test["user"].nunique() >= 100
    assert 0.3 < split.test["label"].mean() < 0.7
    assert f"{len(split.test)} pairs of {split.test['user'].nunique()} users" in split.description


def test_ctr_test_windows_stay_as_version_1_drew_them():
    """Version 1's test draw (default_rng(seed), no valid draw) is unchanged: the same pairs are sampled."""
    dataset = ctr_dataset()
    split = ctr(dataset, max_test_users=5, max_pairs_per_test_user=3, history="window_start")
    full = ctr(dataset)
    rng = np.random.default_rng(0)
    users = np.sort(full.test["user"].unique())
    keep = set(rng.choice(users, size=5, replace=False))
    test = full.test[full.test["user"].isin(keep)].reset_index(drop=True)
    rank = test.assign(_k=rng.random(len(test))).groupby("user")["_k"].rank(method="first")
    assert interaction_pairs(split.test) == interaction_pairs(test[rank.to_numpy() <= 3])


# ---------------------------------------------------------------- cold_users: PtE's protocol (version 2)
def test_cold_users_hold_test_users_out_of_training_with_their_sequence_as_context(tiny_dataset):
    from bench.data.splits import make_split, resolve_split_params
    from bench.eval.ranking import test_user_histories
    from bench.types import TrainView

    split = make_split(tiny_dataset, "cold_users", resolve_split_params("cold_users", {}))
    held = set(split.valid["user"]) | set(split.test["user"])
    assert held and not held & set(split.train["user"])  # absent from training
    assert split.test.groupby("user").size().eq(1).all() and split.valid.groupby("user").size().eq(1).all()
    inter = tiny_dataset.interactions
    for user, row in split.test.set_index("user").iterrows():  # the held-out positive is the user's last item
        mine = inter[inter["user"] == user].sort_values(["timestamp", "item"], kind="mergesort")
        assert row["item"] == mine["item"].iloc[-1]
        assert test_user_histories(split)[user] == tuple(mine["item"].iloc[:-1])
    assert set(split.context["part"]) == {"valid", "test"}
    # the method's view: the valid users' context, never the test users'
    view = TrainView.of(tiny_dataset, split)
    assert set(view.split.valid_context["user"]) == set(split.valid["user"])
    assert not set(view.split.valid_context["user"]) & set(split.test["user"])


def test_cold_users_refuse_id_backbones_and_few_shot_variant_keeps_history(tiny_dataset):
    from bench.data.splits import make_split, resolve_split_params
    from bench.errors import BenchError
    from bench.spec import Suite, expand

    suite = Suite(name="t", datasets=["ml-100k"], splits=["cold_users"], backbones=["lightgcn"],
                  methods=["random"], seeds=[0])
    with pytest.raises(BenchError, match="cannot score a user it never saw.*new_users_fewshot"):
        expand(suite)
    assert expand(suite.model_copy(update={"backbones": ["sasrec"]}))
    fewshot = make_split(tiny_dataset, "new_users_fewshot", resolve_split_params("new_users_fewshot", {}))
    held = set(fewshot.test["user"])
    kept = fewshot.train[fewshot.train["user"].isin(held)].groupby("user").size()
    assert kept.eq(3).all() and set(kept.index) == held
