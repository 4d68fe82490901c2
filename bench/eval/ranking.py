"""Full-ranking metrics (Recall, NDCG, Hit, MRR at 10 and 20) per user, overall and per segment.

Per-user values come from RecBole's own metric classes (`metric_info`), so numbers match RecBole's
evaluator; the harness keeps the per-user vectors (a sidecar for paired tests) and the segment breakdowns.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

KS = (10, 20)
METRICS = ("recall", "ndcg", "hit", "mrr")


def _metric_objects():
    from methods.backbones import recbole_compat

    recbole_compat.apply()
    from recbole.evaluator.metrics import MRR, NDCG, Hit, Recall

    config = {"topk": list(KS), "metric_decimal_place": 6}
    return {"recall": Recall(config), "ndcg": NDCG(config), "hit": Hit(config), "mrr": MRR(config)}


def per_user_metrics(pos_index: np.ndarray, pos_len: np.ndarray) -> dict[str, np.ndarray]:
    """From a [users, max_k] hit matrix of the ranked top items and the number of positives per user."""
    objects = _metric_objects()
    out = {}
    for name, obj in objects.items():
        values = obj.metric_info(pos_index, pos_len) if name in ("recall", "ndcg") else obj.metric_info(pos_index)
        for k in KS:
            out[f"{name}@{k}"] = values[:, k - 1].astype(np.float64)
    return out


class NonFiniteScoresError(ValueError):
    """A method scored some (user, item) NaN or +inf."""


def rank_users(
    score_fn: Callable[[np.ndarray], np.ndarray],
    users: np.ndarray,
    item_ids: np.ndarray,
    positives: dict[str, np.ndarray],
    exclude: dict[str, np.ndarray],
    batch_size: int = 256,
    who: str = "the method",
) -> np.ndarray:
    """Top-max(KS) catalogue indices per user, after masking each user's `exclude` items (-inf).

    A NaN or +inf score is an error naming `who` (torch.topk would rank NaN first); -inf means "never"."""
    import torch

    max_k = max(KS)
    top = np.empty((len(users), max_k), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        scores = torch.as_tensor(np.asarray(score_fn(batch), dtype=np.float32))
        if scores.shape != (len(batch), len(item_ids)):
            raise ValueError(f"method returned scores of shape {tuple(scores.shape)}, "
                             f"expected {(len(batch), len(item_ids))}")
        bad = torch.isnan(scores) | (scores == torch.inf)
        if bad.any():
            row = int(bad.any(dim=1).nonzero()[0, 0])
            raise NonFiniteScoresError(f"{who} returned {int(bad.sum())} NaN / +inf scores (first for user "
                                       f"{batch[row]!r}); scores must be finite or -inf")
        for row, user in enumerate(batch):
            seen = exclude.get(user)
            if seen is not None and len(seen):
                scores[row, torch.as_tensor(seen)] = -torch.inf
        top[start:start + len(batch)] = torch.topk(scores, max_k, dim=1).indices.numpy()
    return top


def evaluate(
    top: np.ndarray,
    users: np.ndarray,
    positives: dict[str, np.ndarray],
    user_segment: pd.Series,
    item_segment_of: np.ndarray,
) -> tuple[dict, pd.DataFrame]:
    """Summary (overall, per user segment, per item segment) and the per-user table.

    `item_segment_of[j]` is the segment label of catalogue item j. An item segment's metric for a user
    counts only that user's positives in the segment; users with none are left out of that segment.
    """
    table = pd.DataFrame({"user": users})
    table["user_segment"] = user_segment.reindex(users).fillna("cold").to_numpy()
    summary: dict = {}

    def score(mask_fn) -> tuple[dict[str, np.ndarray], np.ndarray]:
        pos_sets = [mask_fn(positives[u]) for u in users]
        pos_len = np.array([len(p) for p in pos_sets], dtype=np.int64)
        pos_index = np.array([np.isin(top[i], p) for i, p in enumerate(pos_sets)], dtype=bool)
        values = per_user_metrics(pos_index, np.maximum(pos_len, 1))
        return values, pos_len > 0

    overall, has = score(lambda p: p)
    for key, vals in overall.items():
        table[key] = np.where(has, vals, np.nan)
    summary["overall"] = {k: float(np.nanmean(table[k])) for k in overall} | {"n_users": int(has.sum())}
    for label in sorted(table["user_segment"].unique()):
        rows = table[table["user_segment"] == label]
        summary[f"user:{label}"] = {k: float(np.nanmean(rows[k])) for k in overall} | {"n_users": len(rows)}
    for label in sorted(set(item_segment_of)):
        members = np.flatnonzero(item_segment_of == label)
        values, has = score(lambda p, m=members: np.intersect1d(p, m))
        for key, vals in values.items():
            table[f"{label}:{key}"] = np.where(has, vals, np.nan)
        if has.any():
            summary[f"item:{label}"] = {k: float(vals[has].mean()) for k, vals in values.items()} | {
                "n_users": int(has.sum())}
    return summary, table


def test_user_histories(split) -> dict:
    """Held-out test users' earlier sequences (item ids, oldest first): what the protocol gives a method at
    inference for users absent from training (cold_users' context); empty for other splits."""
    context = split.context[split.context["part"] == "test"]
    ordered = context.sort_values(["user", "timestamp", "item"], kind="mergesort")
    return {u: tuple(g) for u, g in ordered.groupby("user")["item"]}


def query_for(users, histories: dict):
    """The ScoreQuery of `users` with the held-out histories the protocol provides for them."""
    from bench.types import ScoreQuery

    return ScoreQuery.of(users, user_histories={u: histories[u] for u in users if u in histories})


def evaluate_ranking(method, dataset, split, who: str = "the method") -> tuple[dict, pd.DataFrame, dict]:
    """The ranking protocol: every test user's scores over the catalogue (`method.score(ScoreQuery)`), each
    user's train + valid items masked (or, with the split's `eval_negatives` N, the positives ranked among N
    sampled unseen items: LLM-ESR's labelled option); metrics overall and per segment, per-user table, and
    what the protocol was."""
    item_ids = dataset.item_ids
    position = {item: i for i, item in enumerate(item_ids)}
    users = np.sort(split.test["user"].unique())
    positives = {u: np.sort(g.map(position).to_numpy()) for u, g in split.test.groupby("user")["item"]}
    # masked: what the user is known to have interacted with (train, valid, and a held-out user's context)
    seen = pd.concat([split.train, split.valid, split.context[list(split.train.columns.intersection(
        split.context.columns))]])
    exclude = {u: g.map(position).to_numpy() for u, g in seen.groupby("user")["item"]}
    n_negatives = int(split.params.get("eval_negatives", 0) or 0)
    if n_negatives:
        from bench.data.splits import sampled_negative_exclusion

        exclude = sampled_negative_exclusion(split, item_ids, positives, exclude, n_negatives)
    histories = test_user_histories(split)
    top = rank_users(lambda batch: method.score(query_for(batch, histories)), users, item_ids, positives, exclude,
                     who=who)
    item_segment_of = split.item_segment.reindex(item_ids).fillna("tail").to_numpy()
    summary, per_user = evaluate(top, users, positives, split.user_segment, item_segment_of)
    protocol = ("full ranking over the catalogue; each user's train and valid items masked" if not n_negatives
                else f"sampled: each test positive ranked among {n_negatives} sampled negatives (LLM-ESR protocol; "
                     "inflates numbers vs full ranking)")
    if histories:
        protocol += ("; test users are absent from training, each scored from its earlier sequence (given at "
                     "inference only), which is masked")
    evaluation = {"protocol": protocol, "sampled_negatives": n_negatives, "n_items": int(len(item_ids)),
                  "n_test_users": int(len(users))}
    return summary, per_user, evaluation
