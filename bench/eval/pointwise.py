"""The pointwise (CTR) protocol of CoLLM / TALLRec (paper 002): labelled pairs, temporal windows,
histories of earlier positives, AUC and UAUC over all test pairs and over warm / cold pair subsets.

`ctr_temporal` is a splitter of `bench.data.splits` (there): train / valid / test keep every rated
pair with a `label` column (rating >= `label_threshold`) and, for valid / test, a pair `segment`
("warm": user and item each with more than `warm_threshold` training pairs; "cold": user or item absent
from training; "other": the rest). The split file is hashed and shared by every method of the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

MONTH_SECONDS = 365.25 / 12 * 86400  # windows are counted in average months back from the last rating
PAIR_SEGMENTS = ("warm", "cold", "other")


@dataclass
class PairData:
    """Labelled pairs of one split part with each pair's history (positive item ids, oldest first)."""

    frame: pd.DataFrame  # user, item, label, timestamp (+ segment for valid/test)
    histories: list[tuple[str, ...]]


def histories(split, part: str) -> PairData:
    """Histories of `part`'s pairs: the user's positives strictly earlier in time, last `history_length`.

    `part`: train, valid, test, or train_all (all training pairs of a few-shot split; `train` otherwise).
    Training pairs look at earlier training positives. Valid / test pairs: `history: window_start`
    (default) freezes the history at the start of the pair's window (positives of the earlier parts
    only, so no held-out label feeds another held-out pair's input, and a user's pairs share one prompt
    prefix); `history: pair` (CoLLM's code) uses every earlier positive, held-out ones included.
    """
    params = split.params
    length, mode = int(params["history_length"]), params["history"]
    frame = getattr(split, part)
    if part == "train_all" and frame is None:  # `train` holds every training pair (no few-shot sample)
        frame = split.train
    frame = frame.reset_index(drop=True)
    if "history" in frame.columns:  # saved by the splitter from the full windows, before any subsampling
        return PairData(frame, [tuple(json.loads(h)) for h in frame["history"]])
    per_pair = part in ("train", "train_all") or mode == "pair"
    earlier = {"train": [], "train_all": [], "valid": [split.train], "test": [split.train, split.valid]}[part]
    source = pd.concat([*earlier, frame]) if per_pair else pd.concat(earlier)
    pos = source[source["label"] == 1].sort_values(["user", "timestamp", "item"], kind="mergesort")
    by_user = {u: (g["timestamp"].to_numpy(), g["item"].to_numpy()) for u, g in pos.groupby("user")}
    empty = (np.zeros(0), np.zeros(0, dtype=object))
    out = []
    for user, ts in zip(frame["user"].to_numpy(), frame["timestamp"].to_numpy()):
        times, items = by_user.get(user, empty)
        n = int(np.searchsorted(times, ts, side="left")) if per_pair else len(times)
        out.append(tuple(items[max(0, n - length):n]))
    return PairData(frame, out)


# ---------------------------------------------------------------------------------------------- metrics
def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half), NaN when only one class is present."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def uauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[float, pd.DataFrame]:
    """Mean over users of the per-user AUC, skipping users whose pairs are all one class."""
    frame = pd.DataFrame({"user": users, "label": labels, "score": scores})
    rows = [{"user": u, "n_pairs": len(g), "n_pos": int(g["label"].sum()),
             "auc": auc(g["label"].to_numpy(), g["score"].to_numpy())} for u, g in frame.groupby("user")]
    table = pd.DataFrame(rows, columns=["user", "n_pairs", "n_pos", "auc"])
    valid = table["auc"].dropna()
    return (float(valid.mean()) if len(valid) else float("nan")), table


AUC_BOOTSTRAP = 2000  # resamples of the users for the 95% interval of AUC
AUC_BOOTSTRAP_SEED = 0
WINS_LIMIT = 20_000_000  # positive x negative comparisons held in memory for the exact per-resample AUC


def _user_wins(user_code: np.ndarray, n_users: int, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """C[u, v]: pairs (positive of user u, negative of user v) the positive wins (ties count one half), so
    AUC over any multiset of users with weights w is w'Cw / ((w . positives) (w . negatives))."""
    pos, neg = labels, ~labels
    wins = (scores[pos][:, None] > scores[neg][None, :]) + 0.5 * (scores[pos][:, None] == scores[neg][None, :])
    by_pos = np.zeros((n_users, int(pos.sum())))
    by_pos[user_code[pos], np.arange(int(pos.sum()))] = 1
    by_neg = np.zeros((int(neg.sum()), n_users))
    by_neg[np.arange(int(neg.sum())), user_code[neg]] = 1
    return by_pos @ wins @ by_neg


def _resampled_mean_aucs(user_code: np.ndarray, n_users: int, labels: np.ndarray, *sides: np.ndarray):
    """For each side ([n_runs, n_pairs] scores of runs on the same pairs), a vectorised bootstrap statistic:
    resampled user indices (`chosen`, users on `axis`) -> the mean over the side's runs of each run's exact AUC
    on those users' pairs (`_user_wins`: w'Cw / ((w . positives) (w . negatives)) with w the users' counts)."""
    n_pos = np.bincount(user_code[labels], minlength=n_users).astype(float)
    n_neg = np.bincount(user_code[~labels], minlength=n_users).astype(float)

    def statistic_of(wins: np.ndarray):
        def statistic(chosen, axis=-1):
            chosen = np.moveaxis(np.asarray(chosen), axis, -1)
            flat = chosen.reshape(-1, chosen.shape[-1])
            weights = np.stack([np.bincount(row, minlength=n_users) for row in flat]).astype(float)
            values = np.einsum("bu,ruv,bv->rb", weights, wins, weights) / ((weights @ n_pos) * (weights @ n_neg))
            return values.mean(axis=0).reshape(chosen.shape[:-1])
        return statistic

    return [statistic_of(np.stack([_user_wins(user_code, n_users, labels, run) for run in runs])) for runs in sides]


def auc_interval(users: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                 n_resamples: int = AUC_BOOTSTRAP, seed: int = AUC_BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile bootstrap interval of AUC, resampling users (each with all its pairs: a user's pairs are
    not independent), by scipy.stats.bootstrap. `scores` [n_pairs] or [n_runs, n_pairs] (runs scored on the
    same pairs, e.g. one row's seeds): the statistic is then the mean over runs of each run's AUC on the
    resampled pairs. Each resample's AUC is exact (ties one half): from per-user-pair win counts when the
    positive x negative comparisons fit in memory, else recomputed from the resampled pairs."""
    from scipy import stats

    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    labels = np.asarray(labels).astype(bool)
    codes, user_code = np.unique(np.asarray(users), return_inverse=True)
    n_users = len(codes)
    if int(labels.sum()) * int((~labels).sum()) <= WINS_LIMIT:
        statistic, = _resampled_mean_aucs(user_code, n_users, labels, scores)
        vectorized = True
    else:
        rows_of = [np.flatnonzero(user_code == k) for k in range(n_users)]

        def statistic(chosen):
            rows = np.concatenate([rows_of[int(k)] for k in chosen])
            return np.mean([auc(labels[rows], run[rows]) for run in scores])

        vectorized = False
    result = stats.bootstrap((np.arange(n_users),), statistic, n_resamples=n_resamples, vectorized=vectorized,
                             method="percentile", confidence_level=0.95, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def auc_difference(users: np.ndarray, labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                   n_resamples: int = AUC_BOOTSTRAP, seed: int = AUC_BOOTSTRAP_SEED) -> dict:
    """A vs B on the same labelled pairs, the user as the unit: `scores_a`, `scores_b` [n_runs, n_pairs]
    (seed-matched runs; each side's statistic is the mean of its runs' AUCs). A paired percentile bootstrap
    over users (one draw of users for both sides, each user with all its pairs; scipy.stats.bootstrap) gives
    the 95% interval of the relative gain AUC_A / AUC_B - 1 and the two-sided p of no difference,
    2 min(P*(diff <= 0), P*(diff >= 0)) over the resampled differences (at least 1 / n_resamples)."""
    from scipy import stats

    labels = np.asarray(labels).astype(bool)
    runs_a = np.atleast_2d(np.asarray(scores_a, dtype=np.float64))
    runs_b = np.atleast_2d(np.asarray(scores_b, dtype=np.float64))
    if int(labels.sum()) * int((~labels).sum()) > WINS_LIMIT:
        raise ValueError(f"{int(labels.sum())} x {int((~labels).sum())} positive x negative comparisons exceed "
                         f"WINS_LIMIT ({WINS_LIMIT}): too many test pairs for the paired AUC bootstrap")
    codes, user_code = np.unique(np.asarray(users), return_inverse=True)
    n_users = len(codes)
    auc_a_of, auc_b_of = _resampled_mean_aucs(user_code, n_users, labels, runs_a, runs_b)

    def relative_and_difference(chosen, axis=-1):  # one resample of users serves both statistics
        a, b = auc_a_of(chosen, axis), auc_b_of(chosen, axis)
        return np.stack([a / b - 1, a - b])

    everyone = np.arange(n_users)
    auc_a, auc_b = float(auc_a_of(everyone)), float(auc_b_of(everyone))
    result = stats.bootstrap((everyone,), relative_and_difference, n_resamples=n_resamples, vectorized=True,
                             method="percentile", confidence_level=0.95, rng=np.random.default_rng(seed))
    ci, diffs = result.confidence_interval, result.bootstrap_distribution[1]
    p = 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0)))
    return {"auc_a": auc_a, "auc_b": auc_b,
            "relative": auc_a / auc_b - 1, "ci_low": float(ci.low[0]), "ci_high": float(ci.high[0]),
            "p": min(1.0, max(p, 1 / n_resamples)), "n_users": n_users, "n_pairs": int(len(labels))}


def pair_frame(frame: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """The scored test pairs as saved beside the record (`pairs.csv.gz`): user, item, label, segment, score."""
    out = frame[["user", "item", "label"]].copy()
    out["segment"] = frame["segment"].to_numpy() if "segment" in frame else "other"
    out["score"] = np.asarray(scores, dtype=np.float64)
    return out.reset_index(drop=True)


def evaluate_pairs(frame: pd.DataFrame, scores: np.ndarray) -> tuple[dict, pd.DataFrame]:
    """Summary {"overall", "pair:warm", "pair:cold", "pair:other"} of AUC / UAUC and the per-user table."""
    summary: dict = {}
    users, labels = frame["user"].to_numpy(), frame["label"].to_numpy()
    segments = frame["segment"].to_numpy() if "segment" in frame else np.full(len(frame), "other")
    value, table = uauc(users, labels, scores)
    low, high = auc_interval(users, labels, scores)
    summary["overall"] = {"auc": auc(labels, scores), "uauc": value, "n_pairs": int(len(frame)),
                          "n_users": int(table["auc"].notna().sum()), "positive_rate": float(labels.mean()),
                          "auc_ci_low": low, "auc_ci_high": high}
    table = table.rename(columns={"auc": "uauc"})
    for label in PAIR_SEGMENTS:
        mask = segments == label
        if not mask.any():
            continue
        value, part = uauc(users[mask], labels[mask], scores[mask])
        summary[f"pair:{label}"] = {"auc": auc(labels[mask], scores[mask]), "uauc": value,
                                    "n_pairs": int(mask.sum()), "n_users": int(part["auc"].notna().sum()),
                                    "positive_rate": float(labels[mask].mean())}
        table = table.merge(part[["user", "auc"]].rename(columns={"auc": f"{label}:uauc"}), on="user", how="left")
    return summary, table


def score_pairs(method, split, progress: bool = False) -> tuple[pd.DataFrame, np.ndarray, list[float], float]:
    """(test pairs, their scores, ms per pair of each user's call, total seconds): every test pair scored
    through `method.score(ScoreQuery)`, one call per user, with the history the split defines for each pair
    (`progress`: a bar over the users, in the run's log). Non-finite scores are an error."""
    import time

    from tqdm.auto import tqdm

    from bench.progress import current as current_progress
    from bench.types import ScoreQuery

    data = histories(split, "test")
    test = data.frame
    pair_history = {(u, i): h for u, i, h in zip(test["user"], test["item"], data.histories)}
    scores = np.zeros(len(test), dtype=np.float64)
    per_user_ms = []
    start_all = time.perf_counter()
    groups = test.groupby("user", sort=True).indices
    reporter = current_progress()  # the run's console line (bench.progress): test users scored
    reporter.begin("test pairs")
    for done, (user, rows) in enumerate(tqdm(groups.items(), total=len(groups), desc="scoring test pairs",
                                             unit="user", disable=not progress)):
        reporter.update("test pairs", done, len(groups), unit="user")
        items = test["item"].to_numpy()[rows]
        query = ScoreQuery.of([user], items, {(user, i): pair_history[(user, i)] for i in items})
        start = time.perf_counter()
        values = np.asarray(method.score(query), dtype=np.float64)
        per_user_ms.append((time.perf_counter() - start) * 1000 / len(rows))
        if values.shape != (1, len(rows)):
            raise ValueError(f"method returned scores of shape {values.shape}, expected {(1, len(rows))}")
        scores[rows] = values[0]
    total = time.perf_counter() - start_all
    if not np.isfinite(scores).all():
        raise ValueError(f"method returned {int((~np.isfinite(scores)).sum())} non-finite scores")
    return test, scores, per_user_ms, total


def evaluate_method(method, split, progress: bool = False) -> tuple[dict, pd.DataFrame, dict, dict, pd.DataFrame]:
    """AUC (with its 95% user-bootstrap interval) / UAUC overall and per pair segment of `score_pairs`;
    latency = scoring seconds per pair; the scored pairs (`pair_frame`)."""
    import os

    load_before = os.getloadavg()[0]
    test, scores, per_user_ms, total = score_pairs(method, split, progress)
    summary, table = evaluate_pairs(test, scores)
    latency = {"median_ms": float(np.median(per_user_ms)), "p90_ms": float(np.percentile(per_user_ms, 90)),
               "per_pair_ms": 1000 * total / max(1, len(test)), "unit": "ms per test pair",
               "n_users": len(per_user_ms), "cpu_count": os.cpu_count(),
               "load_1min": max(load_before, os.getloadavg()[0])}
    evaluation = {"protocol": "pointwise: AUC over all test pairs, UAUC = mean per-user AUC (users with one "
                              "class skipped); pair segments warm / cold / other",
                  "n_test_pairs": int(len(test)), "n_test_users": int(test["user"].nunique()),
                  "split_description": split.description,
                  "auc_interval": f"95% percentile bootstrap over test users ({AUC_BOOTSTRAP} resamples, seed "
                                  f"{AUC_BOOTSTRAP_SEED}; a user's pairs resampled together)"}
    return summary, table, latency, evaluation, pair_frame(test, scores)
