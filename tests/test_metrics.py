import numpy as np
import pandas as pd
import pytest

from bench.eval.ranking import evaluate, per_user_metrics, positions_by_user, rank_users


def test_per_user_metrics_by_hand():
    # user 0: positives {a, b}, hits at ranks 1 and 3; user 1: one positive, hit at rank 2
    pos_index = np.zeros((2, 20), dtype=bool)
    pos_index[0, [0, 2]] = True
    pos_index[1, 1] = True
    values = per_user_metrics(pos_index, np.array([2, 1]))
    assert values["recall@10"] == pytest.approx([1.0, 1.0])
    dcg0 = 1 / np.log2(2) + 1 / np.log2(4)
    idcg0 = 1 / np.log2(2) + 1 / np.log2(3)
    assert values["ndcg@10"] == pytest.approx([dcg0 / idcg0, 1 / np.log2(3)])
    assert values["mrr@10"] == pytest.approx([1.0, 0.5])
    assert values["hit@20"] == pytest.approx([1, 1])


def test_rank_users_masks_training_items_and_segments():
    items = np.array([str(i) for i in range(25)])
    scores = np.tile(np.arange(25, 0, -1, dtype=np.float32), (2, 1))  # item 0 best

    def score_fn(batch):
        return scores[: len(batch)]

    users = np.array(["u1", "u2"])
    positives = {"u1": np.array([1]), "u2": np.array([24])}
    exclude = {"u1": np.array([0])}  # u1 trained on item 0: it must not be recommended
    top = rank_users(score_fn, users, items, positives, exclude)
    assert 0 not in top[0] and top[0][0] == 1 and top[1][0] == 0
    segment_of = np.array(["head"] * 5 + ["tail"] * 20)
    summary, table = evaluate(top, users, positives, pd.Series({"u1": "warm", "u2": "cold"}), segment_of)
    assert summary["overall"]["recall@10"] == pytest.approx(0.5)
    assert summary["user:warm"]["ndcg@10"] == pytest.approx(1.0)
    assert summary["user:cold"]["recall@20"] == pytest.approx(0.0)
    assert summary["item:head"]["n_users"] == 1 and summary["item:tail"]["n_users"] == 1
    assert np.isnan(table.loc[1, "head:recall@10"])


def test_positions_by_user_keeps_each_users_row_order_and_refuses_or_drops_unknown_items():
    frame = pd.DataFrame({"user": ["b", "a", "b", "a", "c"], "item": ["i2", "i0", "i1", "i9", "i9"]})
    position = {"i0": 0, "i1": 1, "i2": 2}
    with pytest.raises(ValueError, match="i9"):
        positions_by_user(frame, position)
    dropped = positions_by_user(frame, position, drop_unknown=True)
    assert {u: p.tolist() for u, p in dropped.items()} == {"a": [0], "b": [2, 1], "c": []}
    known = frame[frame["item"] != "i9"]
    reference = {u: g.map(position).to_numpy() for u, g in known.groupby("user")["item"]}
    got = positions_by_user(known, position)
    assert list(got) == list(reference) and all(got[u].dtype == np.int64 for u in got)
    assert all(np.array_equal(got[u], reference[u]) for u in reference)
