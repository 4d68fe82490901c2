"""Full-ranking metrics (Recall, NDCG, Hit, MRR at 10 and 20) per user, overall and per segment, and the
catalogue metrics of the top-K lists (item coverage, share of tail items).

Per-user values come from RecBole's own metric classes (`metric_info`), so numbers match RecBole's
evaluator; the harness keeps the per-user vectors (a sidecar for paired tests) and the segment breakdowns.
Item segments come in two dimensions: head / tail (the split's `item_segment`, by training popularity) and
warm / cold (whether the item has a training interaction in the split).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

KS = (10, 20)
METRICS = ("recall", "ndcg", "hit", "mrr")


def _metric_objects():
    from bench.recbole_compat import apply

    apply()
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


class _Hits:
    """Which of each user's top entries are positives, for every user at once: (row, item) pairs as one int64
    key each, looked up in one sorted pass (a per-user `np.isin` / `np.intersect1d` cost seconds on ml-1m).

    `metrics(None)`: every positive counts (its count with repeats, as `len(positives[u])`); `metrics(mask)`:
    only a user's distinct positives j with `mask[j]` (an item segment), as `np.intersect1d(p, members)` did,
    and a top entry counts only when it is such a positive. Same boolean hit matrix and counts as the per-user
    code, so the same metric values, bit for bit."""

    def __init__(self, top: np.ndarray, positives: list[np.ndarray]):
        self.top = np.asarray(top)
        lists = [np.asarray(p, dtype=np.int64).ravel() for p in positives]
        self.counts = np.fromiter((len(p) for p in lists), dtype=np.int64, count=len(lists))
        self.items = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
        self.rows = np.repeat(np.arange(len(lists), dtype=np.int64), self.counts)
        values = np.concatenate([self.items, self.top.ravel().astype(np.int64)])
        self.low = int(values.min()) if len(values) else 0
        self.width = (int(values.max()) - self.low + 1) if len(values) else 1
        keys = self.rows * self.width + (self.items - self.low)
        top_keys = (np.arange(len(lists), dtype=np.int64)[:, None] * self.width
                    + (self.top.astype(np.int64) - self.low))
        self.keys = keys
        self.hit = np.isin(top_keys, keys) if len(lists) else np.zeros(self.top.shape, dtype=bool)

    def _member(self, mask: np.ndarray, items: np.ndarray) -> np.ndarray:
        """mask[items], False where an item is no catalogue index (-1 past the end of a short list)."""
        inside = (items >= 0) & (items < len(mask))
        return inside & mask[np.where(inside, items, 0)] if len(mask) else inside

    def metrics(self, mask: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if mask is None:
            pos_index, pos_len = self.hit, self.counts
        else:
            kept = np.unique(self.keys[self._member(mask, self.items)])  # distinct in-segment positives
            pos_len = np.bincount(kept // self.width, minlength=len(self.counts)).astype(np.int64)
            pos_index = self.hit & self._member(mask, self.top)
        return per_user_metrics(pos_index, np.maximum(pos_len, 1)), pos_len > 0


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
    blocked: np.ndarray | None = None,
    with_scores: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Top-max(KS) catalogue indices per user, after masking each user's `exclude` items and the `blocked`
    catalogue indices (every user's; items outside the candidate set) to -inf. `with_scores`: also the
    scores of those top items (-inf where fewer items than max(KS) could be ranked; index -1 past the end of
    a catalogue smaller than max(KS)).

    A NaN or +inf score is an error naming `who` (torch.topk would rank NaN first); -inf means "never"."""
    import torch

    max_k = max(KS)
    top = np.empty((len(users), max_k), dtype=np.int64)
    top_scores = np.empty((len(users), max_k), dtype=np.float32)
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
        seen = [np.asarray(exclude.get(user, ()), dtype=np.int64).ravel() for user in batch]
        if any(len(s) for s in seen):  # one masked assignment for the batch (a per-user one cost ~10 us a user)
            rows = np.repeat(np.arange(len(batch)), [len(s) for s in seen])
            scores[torch.as_tensor(rows), torch.as_tensor(np.concatenate(seen))] = -torch.inf
        if blocked is not None and len(blocked):
            scores[:, torch.as_tensor(blocked)] = -torch.inf
        best = torch.topk(scores, min(max_k, len(item_ids)), dim=1)
        rows = slice(start, start + len(batch))
        top[rows], top_scores[rows] = -1, -np.inf  # a catalogue smaller than max(KS): -1 ranks nothing
        top[rows, :best.indices.shape[1]] = best.indices.numpy()
        top_scores[rows, :best.values.shape[1]] = best.values.numpy()
    return (top, top_scores) if with_scores else top


def evaluate(
    top: np.ndarray,
    users: np.ndarray,
    positives: dict[str, np.ndarray],
    user_segment: pd.Series,
    item_segment_of: np.ndarray,
    item_state_of: np.ndarray | None = None,
    shown: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Summary (overall, per user segment, per item segment, catalogue) and the per-user table.

    `item_segment_of[j]` is the head / tail label of catalogue item j, `item_state_of[j]` (optional) its warm /
    cold label. An item segment's metric for a user counts only that user's positives in the segment (columns
    `<label>:<metric>`, summary `item:<label>`); users with none are left out of that segment.
    `shown[i, r]`: whether user i's r-th top entry was a rankable item (not masked; default: all);
    `candidates`: the catalogue indices that could be ranked (default: all). Summary `catalogue`:
    coverage@K = share of the candidates in at least one user's top-K; tail_share@K = mean over users of
    the share of tail items in the user's top-K (also per user, column `tail_share@K`).
    """
    table = pd.DataFrame({"user": users})
    table["user_segment"] = user_segment.reindex(users).fillna("cold").to_numpy()
    summary: dict = {}

    hits = _Hits(top, [positives[u] for u in users])
    overall, has = hits.metrics(None)
    for key, vals in overall.items():
        table[key] = np.where(has, vals, np.nan)
    summary["overall"] = {k: float(np.nanmean(table[k])) for k in overall} | {"n_users": int(has.sum())}
    for label in sorted(table["user_segment"].unique()):
        rows = table[table["user_segment"] == label]
        summary[f"user:{label}"] = {k: float(np.nanmean(rows[k])) for k in overall} | {"n_users": len(rows)}
    labels = [(label, item_segment_of) for label in sorted(set(item_segment_of))]
    if item_state_of is not None:  # the second dimension, after head / tail (whose keys stored records hold)
        labels += [(label, item_state_of) for label in ("cold", "warm")]
    for label, of in labels:
        values, has = hits.metrics(np.asarray(of) == label)
        for key, vals in values.items():
            table[f"{label}:{key}"] = np.where(has, vals, np.nan)
        if has.any():
            summary[f"item:{label}"] = {k: float(vals[has].mean()) for k, vals in values.items()} | {
                "n_users": int(has.sum())}
    catalogue, shares = catalogue_metrics(top, item_segment_of, shown, candidates)
    for key, vals in shares.items():
        table[key] = vals
    summary["catalogue"] = catalogue | {"n_users": int(len(users))}
    return summary, table


def catalogue_metrics(top: np.ndarray, item_segment_of: np.ndarray, shown: np.ndarray | None = None,
                      candidates: np.ndarray | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """({coverage@K, tail_share@K, n_candidates}, {tail_share@K: per-user values}) of the top-K lists.

    coverage@K: distinct candidates in the users' top-K (shown entries only) / number of candidates;
    tail_share@K per user: tail items among the user's shown top-K / shown top-K (NaN if none shown);
    its summary value is the mean over users with a shown item."""
    shown = np.ones(top.shape, dtype=bool) if shown is None else shown
    candidates = np.arange(len(item_segment_of)) if candidates is None else np.asarray(candidates)
    tail = item_segment_of[top] == "tail"
    summary: dict = {}
    per_user: dict[str, np.ndarray] = {}
    for k in KS:
        listed = np.unique(top[:, :k][shown[:, :k]])
        summary[f"coverage@{k}"] = float(len(np.intersect1d(listed, candidates)) / max(len(candidates), 1))
        n_shown = shown[:, :k].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(n_shown > 0, (tail[:, :k] & shown[:, :k]).sum(axis=1) / n_shown, np.nan)
        per_user[f"tail_share@{k}"] = share
        summary[f"tail_share@{k}"] = float(np.nanmean(share)) if (n_shown > 0).any() else float("nan")
    summary["n_candidates"] = int(len(candidates))
    return summary, per_user


def item_states(split, item_ids: np.ndarray) -> np.ndarray:
    """Per catalogue item: "warm" when the split's training part holds an interaction with it, else "cold"."""
    return np.where(pd.Index(item_ids).isin(pd.unique(split.train["item"])), "warm", "cold")


def test_user_histories(split) -> dict:
    """Held-out test users' earlier sequences (item ids, oldest first): what the protocol gives a method at
    inference for users absent from training (cold_users' context); empty for other splits."""
    if not len(split.context):  # every split but cold_users (the runner asks twice per run)
        return {}
    context = split.context[split.context["part"] == "test"]
    ordered = context.sort_values(["user", "timestamp", "item"], kind="mergesort")
    return {u: tuple(g) for u, g in ordered.groupby("user")["item"]}


def query_for(users, histories: dict):
    """The ScoreQuery of `users` with the held-out histories the protocol provides for them."""
    from bench.types import ScoreQuery

    return ScoreQuery.of(users, user_histories={u: histories[u] for u in users if u in histories})


def positions_by_user(frame: pd.DataFrame, position: dict, drop_unknown: bool = False) -> dict:
    """Each user's items of `frame` as catalogue positions (`position`: item id -> index), in the frame's row
    order, int64; one map over the whole column, then the groups' row indices (a per-user `.map` costs about
    a second per evaluation on ml-100k). An item outside `position` is an error, or with `drop_unknown`
    left out (its user keeps an entry, maybe empty)."""
    mapped = frame["item"].map(position)
    known = mapped.notna().to_numpy()
    if not known.all() and not drop_unknown:
        missing = frame["item"][~known].unique()[:5].tolist()
        raise ValueError(f"items outside the catalogue: {missing}")
    codes = mapped.fillna(-1).to_numpy(dtype=np.int64)
    return {u: codes[rows[known[rows]]] for u, rows in frame.groupby("user").indices.items()}


CANDIDATES = ("all", "cold", "warm")


def _masks_removed(split) -> bool:
    """Whether the split removed interactions that the evaluator still masks (`mask_removed` of its settings)."""
    from bench.data.splits import SPLIT_SETTINGS

    return bool(getattr(SPLIT_SETTINGS.get(split.name), "mask_removed", False))


def candidate_positions(states: np.ndarray, candidates: str) -> np.ndarray:
    """Catalogue indices that may be ranked: all, or only the cold / only the warm items (WarpRec's
    `candidates: cold|warm|all`)."""
    if candidates not in CANDIDATES:
        from bench.errors import UnknownChoiceError

        raise UnknownChoiceError("candidates", candidates, CANDIDATES)
    return np.arange(len(states)) if candidates == "all" else np.flatnonzero(states == candidates)


def sample_test_users(users: np.ndarray, size: int, split_hash: str) -> np.ndarray:
    """`size` of the sorted `users`, drawn with a seed from the split's content hash and the size (so every
    method asking that size on that split scores the same users), sorted; all of them when size is 0 or
    not smaller than their number."""
    if size <= 0 or size >= len(users):
        return users
    from bench.hashing import derive_seed

    seed = derive_seed(split_hash, "test-users", size)
    chosen = np.random.default_rng(seed).choice(len(users), size, replace=False)
    return users[np.sort(chosen)]


def evaluate_ranking(method, dataset, split, who: str = "the method") -> tuple[dict, pd.DataFrame, dict]:
    """The ranking protocol: every test user's scores over the catalogue (`method.score(ScoreQuery)`), each
    user's train + valid items masked (or, with the split's `eval_negatives` N, the positives ranked among N
    sampled unseen items: LLM-ESR's labelled option); metrics overall and per segment, per-user table, and
    what the protocol was.

    With the split's `candidates` cold (warm), items with (without) a training interaction are masked for
    every user; a test positive outside the candidates is dropped and a user left without one is not
    evaluated (WarpRec's protocol)."""
    from bench.errors import BenchError

    item_ids = dataset.item_ids
    position = {item: i for i, item in enumerate(item_ids)}
    states = item_states(split, item_ids)
    candidates = str(split.params.get("candidates", "all"))
    allowed = candidate_positions(states, candidates)
    all_users = np.sort(split.test["user"].unique())
    positives = {u: np.sort(p) for u, p in positions_by_user(split.test, position).items()}
    tested = positives
    if candidates != "all":
        rankable = np.zeros(len(item_ids), dtype=bool)
        rankable[allowed] = True  # np.intersect1d(p, allowed) of each user, without sorting `allowed` each time
        positives = {u: kept for u, p in positives.items() if len(kept := np.unique(p[rankable[p]]))}
        if not positives:
            raise BenchError(f"split {split.name!r}: no test positive is among the {candidates} candidates "
                             f"({len(allowed)} items); nothing to evaluate with candidates: {candidates}")
    users = np.array([u for u in all_users if u in positives], dtype=all_users.dtype)
    n_eligible = len(users)
    users = sample_test_users(users, int(method.test_user_sample()) if hasattr(method, "test_user_sample") else 0,
                              split.content_hash)
    # masked: what the user is known to have interacted with (train, valid, and a held-out user's context)
    seen = pd.concat([part[["user", "item"]] for part in (split.train, split.valid, split.context)])
    removed = _masks_removed(split)
    if removed:  # cold_items: the interactions the split removed are known too (never a test positive)
        seen = pd.concat([seen, dataset.interactions[["user", "item"]]])
    exclude = positions_by_user(seen, position)
    if removed:
        exclude = {u: np.setdiff1d(e, tested.get(u, ())) for u, e in exclude.items()}
    n_negatives = int(split.params.get("eval_negatives", 0) or 0)
    if n_negatives:
        if candidates != "all":
            raise BenchError(f"split {split.name!r}: eval_negatives and candidates: {candidates} together are "
                             "not supported (the negatives would be drawn outside the candidates)")
        from bench.data.splits import sampled_negative_exclusion

        exclude = sampled_negative_exclusion(split, item_ids, positives, exclude, n_negatives)
    blocked = None if candidates == "all" else np.setdiff1d(np.arange(len(item_ids)), allowed)
    histories = test_user_histories(split)
    top, top_scores = rank_users(lambda batch: method.score(query_for(batch, histories)), users, item_ids,
                                 positives, exclude, who=who, blocked=blocked, with_scores=True)
    item_segment_of = split.item_segment.reindex(item_ids).fillna("tail").to_numpy()
    summary, per_user = evaluate(top, users, positives, split.user_segment, item_segment_of, states,
                                 shown=top_scores > -np.inf, candidates=allowed)
    protocol = ("full ranking over the catalogue; each user's train and valid items masked" if not n_negatives
                else f"sampled: each test positive ranked among {n_negatives} sampled negatives (LLM-ESR protocol; "
                     "inflates numbers vs full ranking)")
    if removed:
        protocol += "; each user's interactions removed by the split (cold items) are masked too"
    if histories:
        protocol += ("; test users are absent from training, each scored from its earlier sequence (given at "
                     "inference only), which is masked")
    if candidates != "all":
        protocol += (f"; candidates: {candidates} items only ({len(allowed)} of {len(item_ids)}; "
                     f"{'cold = without' if candidates == 'cold' else 'warm = with'} a training interaction), "
                     f"the others masked; test positives outside them dropped, {len(all_users) - len(users)} of "
                     f"{len(all_users)} test users without one not evaluated")
    if len(users) < n_eligible:
        protocol += (f"; a seeded sample of {len(users)} of the {n_eligible} test users scored (the method's "
                     "test_users setting; the same users for every method of this split asking that size)")
    cold_item = states[split.test["item"].map(position).to_numpy()] == "cold"
    source = method.cold_item_source() if hasattr(method, "cold_item_source") else None
    evaluation = {"protocol": protocol, "sampled_negatives": n_negatives, "n_items": int(len(item_ids)),
                  "n_test_users": int(len(users)), "candidates": candidates, "n_candidates": int(len(allowed)),
                  "n_cold_items": int((states == "cold").sum()), "n_cold_test_interactions": int(cold_item.sum()),
                  "item_cold_start": source}
    if len(users) < n_eligible:
        evaluation["test_user_sample"] = {"users": int(len(users)), "of": int(n_eligible)}
    return summary, per_user, evaluation
