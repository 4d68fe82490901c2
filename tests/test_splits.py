import numpy as np
import pandas as pd
import pytest

from bench.data.splits import SPLITTERS, load_or_make_split, make_split, resolve_split_params
from bench.errors import BenchError, UnknownChoiceError
from tests.conftest import interaction_pairs

# the tiny data set spans 8 hours (0.011 months): month windows scaled to fit it; every tiny user has 12
# interactions, so longtail needs tail_user_threshold > 12 to have tail users (none is an error)
TINY_SETTINGS = {"ctr_temporal": {"train_months": 0.005, "valid_months": 0.0025, "test_months": 0.0025},
                 "longtail": {"tail_user_threshold": 13}}


def interleaved(dataset):
    """The tiny data set with its users' timelines interleaved (tiny's users follow one another in time, so a
    global cut would only find new users after it): the k-th interaction of every user at time 1000 k + user."""
    from bench.types import Dataset

    inter = dataset.interactions.sort_values(["user", "timestamp"], kind="mergesort")
    position = inter.groupby("user").cumcount()
    inter = inter.assign(timestamp=(1000.0 * position + inter["user"].astype(int)).to_numpy())
    return Dataset(**{**dataset.__dict__, "interactions": inter.reset_index(drop=True)})


@pytest.mark.parametrize("name", sorted(SPLITTERS))
def test_no_test_or_valid_interaction_in_training(tiny_dataset, name):
    if name == "global_temporal":
        tiny_dataset = interleaved(tiny_dataset)
    split = make_split(tiny_dataset, name, resolve_split_params(name, TINY_SETTINGS.get(name, {})))
    train = interaction_pairs(split.train)
    assert len(split.test) > 0 and len(split.valid) > 0
    assert not (interaction_pairs(split.test) & train), "test interaction leaked into training"
    assert not (interaction_pairs(split.valid) & train), "valid interaction leaked into training"
    assert not (interaction_pairs(split.valid) & interaction_pairs(split.test))
    # every interaction is used at most once; no interaction is invented
    everything = interaction_pairs(tiny_dataset.interactions)
    assert interaction_pairs(split.train) | interaction_pairs(split.valid) | interaction_pairs(split.test) <= everything


def test_temporal_loo_holds_out_latest(tiny_dataset):
    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    inter = tiny_dataset.interactions
    for user, row in split.test.set_index("user").iterrows():
        assert row["timestamp"] == inter[inter["user"] == user]["timestamp"].max()
    for user, row in split.valid.set_index("user").iterrows():
        assert row["timestamp"] < split.test.set_index("user").loc[user, "timestamp"]
        assert row["timestamp"] > split.train[split.train["user"] == user]["timestamp"].max()
    assert len(split.train) + len(split.valid) + len(split.test) == len(inter)


def test_random_loo_differs_from_temporal_and_is_seeded(tiny_dataset):
    params = resolve_split_params("random_loo", {})
    a, b = make_split(tiny_dataset, "random_loo", params), make_split(tiny_dataset, "random_loo", params)
    assert a.content_hash == b.content_hash
    temporal = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    assert interaction_pairs(a.test) != interaction_pairs(temporal.test)


def test_half_history_removes_half_keeps_one(tiny_dataset):
    base = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    half = make_split(tiny_dataset, "half_history", resolve_split_params("half_history", {}))
    before = base.train.groupby("user").size()
    after = half.train.groupby("user").size().reindex(before.index)
    expected = np.maximum(1, before - np.ceil(before * 0.5)).astype(int)  # rounding: ceil (the default)
    assert (after == expected).all()
    assert interaction_pairs(half.train) <= interaction_pairs(base.train)
    assert interaction_pairs(half.test) == interaction_pairs(base.test)  # same evaluation targets as the base split


@pytest.mark.parametrize("name", ["cold_users", "new_users_fewshot"])
def test_cold_users_holds_out_newest_users(tiny_dataset, name):
    params = resolve_split_params(name, {"valid_fraction": 0.2, "test_fraction": 0.2})
    split = make_split(tiny_dataset, name, params)
    last = tiny_dataset.interactions.groupby("user")["timestamp"].max()
    test_users, valid_users = set(split.test["user"]), set(split.valid["user"])
    assert not test_users & valid_users
    warm = set(last.index) - test_users - valid_users
    assert last[list(test_users)].min() > last[list(warm)].max()
    kept = split.train[split.train["user"].isin(test_users)].groupby("user").size()
    if name == "cold_users":  # absent from training
        assert kept.empty
    else:
        assert (kept == params["keep_history"]).all() and set(kept.index) == test_users
    assert (split.user_segment[list(test_users)] == "cold").all()


def test_segments_head_is_top_fifth_of_items(tiny_dataset):
    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    counts = split.train.groupby("item").size()
    head = split.item_segment[split.item_segment == "head"].index
    assert len(head) == int(np.ceil(len(counts) * 0.2))
    assert counts[head].min() >= counts.drop(head).max()


def test_saved_split_round_trips_with_hash(tiny_dataset, tmp_path):
    params = resolve_split_params("half_history", {})
    first = load_or_make_split(tiny_dataset, "half_history", params, tmp_path)
    second = load_or_make_split(tiny_dataset, "half_history", params, tmp_path)
    assert first.path == second.path and (first.path / "split.json").exists()
    assert first.content_hash == make_split(tiny_dataset, "half_history", params).content_hash
    pd.testing.assert_frame_equal(first.test.reset_index(drop=True), second.test.reset_index(drop=True))


def test_bad_split_settings_are_errors():
    with pytest.raises(UnknownChoiceError, match="valid choices: cold_items, cold_users, ctr_temporal, global_temporal, half_history, longtail"):
        resolve_split_params("nope", {})
    with pytest.raises(BenchError, match="drop_fraction"):
        resolve_split_params("half_history", {"drop_fractoin": 0.3})


def test_global_temporal_cuts_every_user_at_the_same_time(tiny_dataset):
    """One cut-off time for all users: every training interaction is older than every valid one, every valid one
    older than every test one; test holds (about) the newest 10% of interactions, valid the 10% before them."""
    from bench.data.splits import global_cuts

    loo = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    assert loo.train["timestamp"].max() > loo.test["timestamp"].min()  # the leak a global cut removes
    tiny_dataset = interleaved(tiny_dataset)
    params = resolve_split_params("global_temporal", {})
    split = make_split(tiny_dataset, "global_temporal", params)
    assert split.train["timestamp"].max() < split.valid["timestamp"].min()
    assert split.valid["timestamp"].max() < split.test["timestamp"].min()
    inter = tiny_dataset.interactions
    valid_cut, test_cut = global_cuts(inter, params)
    assert split.valid["timestamp"].min() >= valid_cut and split.test["timestamp"].min() >= test_cut
    assert (inter["timestamp"] >= test_cut).mean() == pytest.approx(0.1, abs=0.02)
    assert ((inter["timestamp"] >= valid_cut) & (inter["timestamp"] < test_cut)).mean() == pytest.approx(0.1, abs=0.02)
    # unlike temporal_loo, a user can have several test positives, and later interactions than another's test
    assert split.test.groupby("user").size().max() > 1
    assert "valid from t=" in split.description and "test from t=" in split.description


def test_global_temporal_drops_users_first_seen_after_a_cut(tiny_dataset):
    """A user whose first interaction is after the test cut has nothing to be scored from: dropped and counted;
    a user seen only in valid stays a (cold) test user."""
    from bench.data.splits import global_cuts
    from bench.types import Dataset

    inter = interleaved(tiny_dataset).interactions
    late = inter["timestamp"].max() + 1
    newcomer = pd.DataFrame({"user": ["newcomer"] * 3, "item": inter["item"].iloc[:3].to_list(),
                             "rating": [5.0] * 3, "timestamp": [late] * 3})
    data = Dataset(**{**tiny_dataset.__dict__, "interactions": pd.concat([inter, newcomer], ignore_index=True)})
    params = resolve_split_params("global_temporal", {})
    split = make_split(data, "global_temporal", params)
    assert "newcomer" not in set(split.test["user"]) | set(split.valid["user"]) | set(split.train["user"])
    valid_cut, test_cut = global_cuts(data.interactions, params)
    after = data.interactions[data.interactions["timestamp"] >= test_cut]["user"].nunique()
    assert split.test["user"].nunique() == after - 1
    assert split.description.endswith("1 valid / test users without an earlier interaction dropped")


@pytest.mark.parametrize("settings, message", [
    ({"valid_fraction": 0.5, "test_fraction": 0.5}, r"valid_fraction \+ test_fraction = 1 leaves no training"),
    ({"test_fraction": 1.5}, "test_fraction"),
])
def test_global_temporal_rejects_fractions_that_leave_nothing(settings, message):
    with pytest.raises(BenchError, match=message):
        resolve_split_params("global_temporal", settings)


def test_global_temporal_coarse_timestamps_name_the_setting(tiny_dataset):
    """Timestamps so coarse that both cuts fall on one time leave valid empty: one line naming the settings."""
    from bench.types import Dataset

    coarse = interleaved(tiny_dataset).interactions.assign(timestamp=lambda f: (f["timestamp"] > f["timestamp"].median())
                                              .astype(float))
    data = Dataset(**{**tiny_dataset.__dict__, "interactions": coarse})
    with pytest.raises(BenchError, match="both cuts fall on the same time.*raise valid_fraction"):
        make_split(data, "global_temporal", resolve_split_params("global_temporal", {}))
