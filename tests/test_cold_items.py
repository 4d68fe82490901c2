"""Item cold start (issue 15.2) and catalogue metrics (15.4): the cold_items split, the warm / cold item
segments of every ranking run, the `candidates` option, coverage@K and tail share@K, each method's
cold-item capability, and `bench verify` on records that predate the new metrics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from bench.data.splits import (
    SPLIT_SETTINGS,
    cold_item_ids,
    load_or_make_split,
    make_split,
    resolve_split_params,
)
from bench.errors import BenchError
from bench.eval.ranking import catalogue_metrics, evaluate, evaluate_ranking, item_states
from bench.method import COLD_ITEM_SOURCES
from tests.conftest import _dataset, interaction_pairs


def hand_dataset():
    """Items 1..10 first seen at times 10, 20, ..., 100 (user 0 rates them in order), so the newest are 10, 9,
    8. Users (items in time order): 1: 1 2 8 3 9; 2: 8 9 4 5; 3: 4 5 10 6; 4: 2 3 (too few to hold out)."""
    rows = [("0", str(i), 5.0, 10.0 * i) for i in range(1, 11)]
    for user, items, start in (("1", [1, 2, 8, 3, 9], 200), ("2", [8, 9, 4, 5], 300), ("3", [4, 5, 10, 6], 400),
                               ("4", [2, 3], 500)):
        rows += [(user, str(i), 4.0, float(start + 10 * k)) for k, i in enumerate(items)]
    return _dataset("hand", rows)


def cold_split(dataset, **settings):
    return make_split(dataset, "cold_items", resolve_split_params("cold_items", settings))


# ---------------------------------------------------------------- the split


def test_cold_items_are_the_newest_rounded_up():
    inter = hand_dataset().interactions
    # 10 items x 0.25 = 2.5 -> 3 (rounded up; round() would give 2); 0.2 -> 2; 0.7 -> 7 despite 0.7 x 10 =
    # 7.000000000000001 in floating point
    assert cold_item_ids(inter, 0.25) == ["8", "9", "10"]
    assert cold_item_ids(inter, 0.2) == ["9", "10"]
    assert len(cold_item_ids(inter, 0.7)) == 7
    with pytest.raises(BenchError, match="makes all 10 items cold"):
        cold_item_ids(inter, 0.95)


def test_cold_items_split_by_hand():
    split = cold_split(hand_dataset(), cold_fraction=0.25)  # cold: 8, 9, 10
    # user 0: test 10 (cold), valid 9 (cold: removed), train 1..8 less 8; user 1: test 9, valid 3, train 1 2
    # (8 removed); user 2: train 8 9 both cold -> no training interaction left: not evaluated (valid 4, test 5
    # dropped); user 3: test 6, valid 10 (removed), train 4 5; user 4: both in train
    assert interaction_pairs(split.train) == ({("0", str(i)) for i in range(1, 8)} | {("1", "1"), ("1", "2"), ("3", "4"),
                                   ("3", "5"), ("4", "2"), ("4", "3")})
    assert interaction_pairs(split.valid) == {("1", "3")}
    assert interaction_pairs(split.test) == {("0", "10"), ("1", "9"), ("3", "6")}
    assert "3 of 10, rounded up" in split.description and "2 of 3 test interactions are on cold items" in \
        split.description and "1 user left without a training interaction" in split.description


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35])
def test_cold_items_split_invariants(tiny_dataset, fraction):
    inter = tiny_dataset.interactions
    split = cold_split(tiny_dataset, cold_fraction=fraction)
    # cold = the newest ceil(n x fraction) items by first interaction, computed here independently
    first = inter.groupby("item")["timestamp"].min()
    n_cold = int(np.ceil(round(len(first) * fraction, 9)))
    assert first.is_unique  # no tie to break: the newest are one set
    newest = set(first.sort_values().index[-n_cold:])
    cold = set(cold_item_ids(inter, fraction))
    assert cold == newest and first[list(cold)].min() > first.drop(list(cold)).max()
    # no cold item in train or valid; no test or valid interaction in train
    assert not set(split.train["item"]) & cold and not set(split.valid["item"]) & cold
    assert not interaction_pairs(split.test) & interaction_pairs(split.train) and not interaction_pairs(split.valid) & interaction_pairs(split.train)
    # test = temporal leave-one-out's test of every user who kept a training interaction, cold or warm item
    base = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    assert interaction_pairs(split.test) == {p for p in interaction_pairs(base.test) if p[0] in set(split.train["user"])}
    assert split.test["item"].isin(cold).any() and (~split.test["item"].isin(cold)).any()
    # every evaluated user has training data; valid is usable
    assert set(split.test["user"]) | set(split.valid["user"]) <= set(split.train["user"])
    assert len(split.valid) > 0
    # the cold segment = the designated cold items, plus any other item whose every interaction fell in valid /
    # test (with 0.1 here: item 27), which the description counts; the catalogue keeps every item and its text
    states = item_states(split, tiny_dataset.item_ids)
    segment = set(tiny_dataset.item_ids[states == "cold"])
    others = {i for i in set(inter["item"]) - cold if not (split.train["item"] == i).any()}
    assert segment == cold | others and (fraction != 0.1 or others == {"27"})
    assert (f"{len(others)} other items have no training interaction" in split.description) == bool(others)
    assert cold <= set(tiny_dataset.item_text.index)


def test_cold_items_settings_are_validated_and_round_trip(tiny_dataset, tmp_path):
    with pytest.raises(BenchError, match=r"candidates.*one of 'all', 'cold', 'warm'"):
        resolve_split_params("cold_items", {"candidates": "some"})
    with pytest.raises(BenchError, match=r"cold_fraction.*number > 0 and < 1"):
        resolve_split_params("cold_items", {"cold_fraction": 1.0})
    assert SPLIT_SETTINGS["cold_items"]().cold_fraction == 0.2
    params = resolve_split_params("cold_items", {})
    saved = load_or_make_split(tiny_dataset, "cold_items", params, tmp_path)
    assert saved.content_hash == make_split(tiny_dataset, "cold_items", params).content_hash


# ---------------------------------------------------------------- evaluation


class ByItemId:
    """Scores item j with its id as a number (newest ids best); the capability a method declares."""

    def __init__(self, item_ids, source="id"):
        self.values = np.array([float(i) for i in item_ids], dtype=np.float32)
        self.source = source

    def score(self, query):
        return np.tile(self.values, (len(query.users), 1))

    def cold_item_source(self):
        return self.source


def test_cold_and_warm_segments_and_removed_interactions_masked():
    dataset = hand_dataset()
    split = cold_split(dataset, cold_fraction=0.25)
    summary, per_user, evaluation = evaluate_ranking(ByItemId(dataset.item_ids), dataset, split)
    # user 0 (test 10): 1..7 trained, 8 and 9 removed: all masked -> 10 is first; user 1 (test 9): 1 2 3 and
    # the removed 8 masked -> 10, 9: rank 2; user 3 (test 6): 4 5 and the removed 10 masked -> 9 8 7 6: rank 4
    assert per_user.set_index("user")["mrr@10"].to_dict() == pytest.approx({"0": 1.0, "1": 0.5, "3": 0.25})
    assert summary["item:cold"]["mrr@10"] == pytest.approx(0.75) and summary["item:cold"]["n_users"] == 2
    assert summary["item:warm"]["mrr@10"] == pytest.approx(0.25) and summary["item:warm"]["n_users"] == 1
    assert per_user.set_index("user")["cold:mrr@10"].isna().to_dict() == {"0": False, "1": False, "3": True}
    assert evaluation["n_cold_items"] == 3 and evaluation["n_cold_test_interactions"] == 2
    assert evaluation["item_cold_start"] == "id" and evaluation["candidates"] == "all"
    assert "removed by the split" in evaluation["protocol"]


def test_every_ranking_split_has_cold_and_warm_segments(tiny_dataset):
    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))
    summary, per_user, evaluation = evaluate_ranking(ByItemId(tiny_dataset.item_ids), tiny_dataset, split)
    states = item_states(split, tiny_dataset.item_ids)
    unseen = set(tiny_dataset.item_ids[states == "cold"])
    assert unseen == set(tiny_dataset.item_ids) - set(split.train["item"])
    assert ("item:cold" in summary) == split.test["item"].isin(unseen).any()
    assert summary["item:warm"]["n_users"] == split.test[~split.test["item"].isin(unseen)]["user"].nunique()
    assert {"cold:ndcg@10", "warm:ndcg@10", "tail_share@10", "tail_share@20"} <= set(per_user.columns)
    assert "removed" not in evaluation["protocol"] and "candidates" not in evaluation["protocol"]


@pytest.mark.parametrize("candidates", ["cold", "warm"])
def test_candidates_mask_exactly_the_other_items(candidates):
    dataset = hand_dataset()
    split = cold_split(dataset, cold_fraction=0.25, candidates=candidates)
    summary, per_user, evaluation = evaluate_ranking(ByItemId(dataset.item_ids), dataset, split)
    if candidates == "cold":
        # warm items masked: users 0 (test 10) and 1 (test 9) keep their cold positive; user 3 (test 6) has
        # none and is left out. User 0: 8, 9 removed -> 10 first; user 1: 8 removed -> 10, 9: rank 2
        assert list(per_user["user"]) == ["0", "1"]
        assert per_user["mrr@10"].tolist() == pytest.approx([1.0, 0.5])
        assert "item:warm" not in summary and evaluation["n_candidates"] == 3
        # top lists hold cold items only: user 0 sees 10 alone, user 1 sees 10 and 9 -> both cold candidates
        # that can be shown are shown: coverage@10 = 2 of 3
        assert summary["catalogue"]["coverage@10"] == pytest.approx(2 / 3)
    else:
        assert list(per_user["user"]) == ["3"]  # the only warm test positive (6)
        # user 3: 4 5 trained, 10 removed, cold 8 9 masked -> 7, 6: rank 2
        assert per_user["mrr@10"].tolist() == pytest.approx([0.5])
        assert "item:cold" not in summary and evaluation["n_candidates"] == 7
        assert summary["catalogue"]["coverage@10"] == pytest.approx(5 / 7)  # 1 2 3 6 7 of the 7 warm items
    assert evaluation["candidates"] == candidates and f"candidates: {candidates} items only" in evaluation["protocol"]
    assert evaluation["n_test_users"] == len(per_user)


def test_candidates_mask_in_rank_users():
    from bench.eval.ranking import rank_users

    items = np.array([str(i) for i in range(30)])
    scores = np.tile(np.arange(30, 0, -1, dtype=np.float32), (1, 1))
    top, values = rank_users(lambda b: scores[: len(b)], np.array(["u"]), items, {}, {"u": np.array([1])},
                             blocked=np.arange(0, 30, 2), with_scores=True)
    listed = top[0][np.isfinite(values[0])]
    assert set(listed) == set(range(3, 30, 2))  # odd items but 1 (the user's), nothing blocked
    assert np.isinf(values[0]).sum() == 20 - 14


def test_candidates_with_no_positive_is_an_error():
    dataset = hand_dataset()
    split = cold_split(dataset, cold_fraction=0.25, candidates="cold")
    split = replace(split, test=split.test[split.test["item"] == "6"])  # a warm positive only
    with pytest.raises(BenchError, match="no test positive is among the cold candidates"):
        evaluate_ranking(ByItemId(dataset.item_ids), dataset, split)


# ---------------------------------------------------------------- coverage and tail share


def test_coverage_and_tail_share_by_hand():
    # 6 items, 0-1 head, 2-5 tail; two users' top lists (KS = 10, 20 need 20 columns: pad with item 0 and
    # mark the padding as not shown)
    segment_of = np.array(["head", "head", "tail", "tail", "tail", "tail"])
    top = np.zeros((2, 20), dtype=np.int64)
    shown = np.zeros((2, 20), dtype=bool)
    top[0, :3], shown[0, :3] = [0, 2, 3], True  # 2 of 3 tail
    top[1, :4], shown[1, :4] = [1, 0, 2, 5], True  # 2 of 4 tail
    summary, per_user = catalogue_metrics(top, segment_of, shown)
    assert summary["coverage@10"] == pytest.approx(5 / 6)  # items 0 1 2 3 5 of 6
    assert per_user["tail_share@10"] == pytest.approx([2 / 3, 1 / 2])
    assert summary["tail_share@10"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # restricted to candidates 2..5: 2 3 5 listed of 4
    summary, _ = catalogue_metrics(top, segment_of, shown, candidates=np.arange(2, 6))
    assert summary["coverage@20"] == pytest.approx(3 / 4) and summary["n_candidates"] == 4
    # through evaluate: the per-user table holds tail share, the summary the catalogue block
    users = np.array(["a", "b"])
    summary, table = evaluate(top, users, {"a": np.array([2]), "b": np.array([4])}, pd.Series(dtype=str),
                              segment_of, shown=shown)
    assert table["tail_share@20"].tolist() == pytest.approx([2 / 3, 1 / 2])
    assert summary["catalogue"]["coverage@20"] == pytest.approx(5 / 6) and summary["catalogue"]["n_users"] == 2


# ---------------------------------------------------------------- capability


@pytest.mark.parametrize("entry,settings,backbone,expected", [
    ("random", {}, "lightgcn", "id"),
    ("random", {}, "sasrec", "id"),
    ("llminit-var", {}, "lightgcn", "text-init"),
    ("llminit-pca-seq", {}, "sasrec", "text-init"),
    ("seq-text", {}, "sasrec", "text"),
    ("seq-text", {"item_embedding": "init"}, "sasrec", "text-init"),
    ("llm2rec", {}, "sasrec", "text"),
    ("pte", {}, "sasrec", "text"),
    ("pte", {"seq_items": "init"}, "sasrec", "text-init"),
    ("pte", {}, "lightgcn", "text-init"),
    ("pte-init", {}, "sasrec", "text-init"),
])
def test_cold_item_capability_per_method(entry, settings, backbone, expected):
    from bench.catalog import METHODS

    method = METHODS.create(entry, settings)
    assert method.cold_item_source(backbone) == expected


def test_every_entry_declares_a_known_capability():
    from bench.catalog import METHODS
    from methods.classic import CTRModel, RandomInit, SeqText
    from methods.llminit.method import LLMInit

    for name in METHODS.names():
        cls = METHODS.get(name)
        assert cls.item_cold_start in COLD_ITEM_SOURCES, name
        assert not [p for p in cls.contract_problems() if "item_cold_start" in p]
    assert (RandomInit.item_cold_start, CTRModel.item_cold_start) == ("id", "id")
    assert (SeqText.item_cold_start, LLMInit.item_cold_start) == ("text", "text-init")


# ---------------------------------------------------------------- RecBole sees the whole catalogue


def test_recbole_backbone_scores_cold_items_from_their_rows(tiny_dataset, tmp_path):
    from bench.backbones import backbone_settings
    from bench.catalog import METHODS
    from tests.conftest import FitCall, score

    split = cold_split(tiny_dataset)
    cold = set(cold_item_ids(tiny_dataset.interactions, 0.2))
    config = backbone_settings("lightgcn", {"epochs": 1, "embedding_size": 8, "train_batch_size": 64,
                                                  "stopping_step": 1})
    method = METHODS.create("random")
    FitCall(dataset=tiny_dataset, split=split, seed=0, device="cpu", run_dir=tmp_path / "run",
            cache_dir=tmp_path, backbone="lightgcn", backbone_settings=config).run(method)
    data = tmp_path / "run" / "work" / "data" / "bench"
    written = pd.concat([pd.read_csv(data / f"bench.{part}.inter", sep="\t", dtype=str)
                         for part in ("train", "valid", "test")])
    assert not set(written["item_id:token"]) & cold  # no cold-item interaction reaches RecBole
    catalogue = set(pd.read_csv(data / "bench.item", sep="\t", dtype=str)["item_id:token"])
    assert cold <= catalogue  # but every cold item has an id, hence a row
    scores = score(method, np.sort(split.test["user"].unique()))
    columns = np.isin(tiny_dataset.item_ids, list(cold))
    assert np.isfinite(scores[:, columns]).all()


# ---------------------------------------------------------------- verify and records that predate the metrics


def test_verify_compares_what_the_stored_record_holds():
    from bench.verify import metric_difference, new_metrics, sidecar_difference

    stored = {"overall": {"ndcg@10": 0.5}, "item:tail": {"ndcg@10": 0.1}}
    rerun = {**stored, "item:cold": {"ndcg@10": 0.2}, "catalogue": {"coverage@10": 0.3}}
    assert metric_difference(stored, rerun) == (0.0, None)
    assert metric_difference(rerun, stored)[0] == float("inf")  # a stored key the rerun lacks still fails
    assert metric_difference(stored, {**rerun, "overall": {"ndcg@10": 0.75}}) == (0.25, "overall.ndcg@10")
    a = pd.DataFrame({"user": ["1", "2"], "ndcg@10": [0.5, 0.25]})
    b = a.assign(**{"cold:ndcg@10": [np.nan, 0.1], "tail_share@10": [0.2, 0.3]})
    assert sidecar_difference(a, b) == 0.0 and sidecar_difference(b, a) == float("inf")
    assert sidecar_difference(a, b.assign(**{"ndcg@10": [0.5, 0.5]})) == pytest.approx(0.25)
    assert new_metrics(stored, rerun, a, b) == ["catalogue.coverage@10", "item:cold.ndcg@10",
                                                "per_user.cold:ndcg@10", "per_user.tail_share@10"]


def test_test_user_sample_is_seeded_by_split_and_size_and_recorded():
    from bench.eval.ranking import sample_test_users

    users = np.array([f"u{i:03d}" for i in range(200)])
    a = sample_test_users(users, 50, "hash-a")
    assert len(a) == 50 and len(set(a)) == 50 and list(a) == sorted(a) and set(a) <= set(users)
    assert list(sample_test_users(users, 50, "hash-a")) == list(a)  # same split, same size: same users
    assert list(sample_test_users(users, 50, "hash-b")) != list(a)
    assert list(sample_test_users(users, 0, "hash-a")) == list(users)
    assert list(sample_test_users(users, 500, "hash-a")) == list(users)


def test_evaluate_ranking_scores_only_the_sample_a_method_asks_for(tiny_dataset):
    from bench.eval.ranking import sample_test_users

    split = make_split(tiny_dataset, "temporal_loo", resolve_split_params("temporal_loo", {}))

    class Sampled(ByItemId):
        def test_user_sample(self):
            return 7

    scored = []

    class Recording(Sampled):
        def score(self, query):
            scored.extend(query.users)
            return super().score(query)

    summary, per_user, evaluation = evaluate_ranking(Recording(tiny_dataset.item_ids), tiny_dataset, split)
    expected = sample_test_users(np.sort(split.test["user"].unique()), 7, split.content_hash)
    assert sorted(scored) == sorted(expected) and sorted(per_user["user"]) == sorted(expected)
    assert evaluation["test_user_sample"] == {"users": 7, "of": split.test["user"].nunique()}
    assert evaluation["n_test_users"] == 7 and "seeded sample of 7" in evaluation["protocol"]
    _, full, plain = evaluate_ranking(ByItemId(tiny_dataset.item_ids), tiny_dataset, split)
    assert len(full) == split.test["user"].nunique() and "test_user_sample" not in plain


@pytest.mark.parametrize("name", ["temporal_loo", "half_history", "cold_users", "cold_items"])
def test_sampled_negatives_option_on_every_ranking_split(tiny_dataset, name):
    """`eval_negatives` N (RecBole 3.0 / LLM-ESR's 1 + 99) is a setting of every ranking split, off by default:
    each test positive is ranked among N sampled items the user never interacted with."""
    from bench.data.splits import sampled_negative_exclusion

    assert resolve_split_params(name, {})["eval_negatives"] == 0
    split = make_split(tiny_dataset, name, resolve_split_params(name, {"eval_negatives": 5}))
    method = ByItemId(tiny_dataset.item_ids)
    summary, per_user, evaluation = evaluate_ranking(method, tiny_dataset, split)
    assert evaluation["sampled_negatives"] == 5 and "sampled" in evaluation["protocol"]
    # by hand: the rank of the user's positive among itself and its 5 negatives under the item-id scores
    item_ids = tiny_dataset.item_ids
    position = {item: i for i, item in enumerate(item_ids)}
    positives = {u: np.sort(g.map(position).to_numpy()) for u, g in split.test.groupby("user")["item"]}
    seen = pd.concat([split.train, split.valid, split.context[["user", "item"]]])
    if name == "cold_items":
        seen = pd.concat([seen[["user", "item"]], tiny_dataset.interactions[["user", "item"]]])
    exclude = {u: np.setdiff1d(g.map(position).to_numpy(), positives.get(u, ())) for u, g in
               seen.groupby("user")["item"]}
    masked = sampled_negative_exclusion(split, item_ids, positives, exclude, 5)
    expected = {}
    for user, pos in positives.items():
        kept = np.setdiff1d(np.arange(len(item_ids)), masked[user])
        assert len(kept) == len(pos) + 5 and not set(kept) & set(exclude.get(user, ()))
        order = kept[np.argsort(-method.values[kept], kind="stable")]
        expected[user] = 1.0 / (1 + np.flatnonzero(np.isin(order, pos))[0])
    assert per_user.set_index("user")["mrr@10"].to_dict() == pytest.approx(expected)
