"""Paired significance tests over run records, with the *user* as the unit.

A user's results under different seeds are correlated, so seeds are never pooled as if they were more
users: each user's metric is averaged over the seeds first (only users with a value in every paired run
of both sides; the mean rounded to 12 decimals so that float noise does not split ties), then:

- Wilcoxon signed-rank over users (`scipy.stats.wilcoxon`);
- a paired sign-flip permutation test over users (`scipy.stats.permutation_test`, seeded; exact when
  2^(users with a non-zero difference) <= 10000);
- a 95% percentile bootstrap interval of the relative gain mean(A) / mean(B) - 1, resampling users
  (seeded);
- the minimum detectable relative effect at 80% power (normal approximation over users);
- a paired t-test over the seed means, as a second, coarser column.

AUC of pointwise runs scored on the same test pairs (the ctr suite's fixed test sample) is tested by a
paired user-cluster bootstrap on their saved pairs (`unit` = "users-bootstrap"); any other metric without
per-user values falls back to a paired t over seeds (`unit` = "seeds"). Corrections: Holm by default, Benjamini-Hochberg as an option (statsmodels).
Every report (tables, `bench compare`, `bench claims`, figures) goes through `compare` here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from bench.records import ResultStore
from bench.spec import RunSpec

DECIMALS = 12  # per-user seed means are rounded to this before ranking
N_PERMUTATIONS = 10_000
N_BOOTSTRAP = 5_000
SEED = 0
ALPHA, POWER = 0.05, 0.8


def seed_pairs(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec],
               match_seeds: bool = True) -> list[tuple[RunSpec, RunSpec]]:
    """(A, B) runs with both records stored: matched on seed, or in order when `match_seeds` is False
    (e.g. two run ids compared directly)."""
    if match_seeds:
        by_seed = {s.seed: s for s in runs_b}
        pairs = [(a, by_seed[a.seed]) for a in runs_a if a.seed in by_seed]
    else:
        pairs = list(zip(runs_a, runs_b))
    return [(a, b) for a, b in pairs if store.has(a.run_id) and store.has(b.run_id)]


def user_matrix(store: ResultStore, pairs: list[tuple[RunSpec, RunSpec]], metric: str) -> pd.DataFrame:
    """Users (rows: those with a value in every run of `pairs`) x (side "a"/"b", pair index) values of
    `metric`; empty when a run has no per-user `metric` (a record-level metric)."""
    sides: dict[str, dict[int, pd.Series]] = {"a": {}, "b": {}}
    for i, runs in enumerate(pairs):
        for side, spec in zip("ab", runs):
            frame = store.per_user(spec.run_id)
            if metric not in frame.columns:
                return pd.DataFrame()
            sides[side][i] = frame.set_index("user")[metric]
    if not pairs:
        return pd.DataFrame()
    return pd.concat({side: pd.concat(cols, axis=1) for side, cols in sides.items()}, axis=1).dropna()


def user_means(matrix: pd.DataFrame) -> pd.DataFrame:
    """Per user: columns a, b = the metric averaged over seeds, rounded to `DECIMALS`."""
    return pd.DataFrame({side: matrix[side].mean(axis=1).round(DECIMALS) for side in "ab"})


def paired_users(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec], metric: str,
                 match_seeds: bool = True) -> pd.DataFrame:
    """Per-user seed means of A and B (columns a, b; index user); empty for a record-level metric."""
    matrix = user_matrix(store, seed_pairs(store, runs_a, runs_b, match_seeds), metric)
    return pd.DataFrame(columns=["a", "b"]) if matrix.empty else user_means(matrix)


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p over paired values (zeros dropped); 1.0 when all are equal."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(stats.wilcoxon(a, b).pvalue) if (a != b).any() else 1.0


def sign_flip_p(diff: np.ndarray, seed: int = SEED, n_resamples: int = N_PERMUTATIONS) -> float:
    """Two-sided paired permutation p of the mean difference, flipping the sign of each user's
    difference (zeros cannot flip, so they are left out); exact when 2^n <= n_resamples."""
    nonzero = np.asarray(diff, float)
    nonzero = nonzero[nonzero != 0]
    if not len(nonzero):
        return 1.0
    result = stats.permutation_test((nonzero,), np.mean, permutation_type="samples", vectorized=True,
                                    n_resamples=n_resamples, rng=np.random.default_rng(seed))
    return float(result.pvalue)


def _relative(a, b, axis=-1):
    return np.mean(a, axis=axis) / np.mean(b, axis=axis) - 1


def bootstrap_interval(samples: tuple[np.ndarray, ...], statistic=_relative, seed: int = SEED,
                       n_resamples: int = N_BOOTSTRAP) -> tuple[float, float]:
    """95% percentile bootstrap interval of `statistic` (default: relative gain mean(a) / mean(b) - 1),
    resampling users (paired: one index draw for every sample); seeded, so the same call gives the same
    interval."""
    if len(samples[0]) < 2:
        return float("nan"), float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ci = stats.bootstrap(tuple(np.asarray(s, float) for s in samples), statistic, paired=True,
                             vectorized=True, n_resamples=n_resamples, method="percentile",
                             rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def mde(diff: np.ndarray, baseline: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect relative to `baseline`: (z_{1-alpha/2} + z_power) * sd(diff) / sqrt(n)
    / baseline (two-sided paired z-test over the n users' differences)."""
    diff = np.asarray(diff, float)
    if len(diff) < 2 or not baseline:
        return float("nan")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * diff.std(ddof=1) / np.sqrt(len(diff)) / abs(baseline))


def user_test(a: np.ndarray, b: np.ndarray, seed: int = SEED) -> dict:
    """The user-level tests of A vs B from per-user (seed-averaged) values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = a - b
    sd = diff.std(ddof=1) if len(diff) > 1 else float("nan")
    low, high = bootstrap_interval((a, b), seed=seed)
    return {"wilcoxon_p": wilcoxon_p(a, b), "signflip_p": sign_flip_p(diff, seed),
            "ci_low": low, "ci_high": high, "mde": mde(diff, b.mean()),
            "effect_dz": float(diff.mean() / sd) if sd > 0 else float("nan"),
            "n_users": int(len(diff)), "n_nonzero": int((diff != 0).sum())}


def seed_t_p(a: np.ndarray, b: np.ndarray) -> float:
    """Paired t p over seed means; NaN with fewer than two seeds or a constant difference."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    return float(stats.ttest_rel(a, b).pvalue) if len(diff) > 1 and np.ptp(diff) > 0 else float("nan")


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def compare(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec], metric: str,
            match_seeds: bool = True, seed: int = SEED) -> dict:
    """A vs B on `metric`: means, relative gain with its user-bootstrap interval, user-level Wilcoxon and
    sign-flip p, MDE, n users (and with a non-zero difference), paired t over seed means. Falls back to
    `compare_seeds` for a metric without per-user values."""
    pairs = seed_pairs(store, runs_a, runs_b, match_seeds)
    matrix = user_matrix(store, pairs, metric)
    if matrix.empty:
        return compare_pairs(store, pairs, metric, seed) or compare_seeds(store, pairs, metric)
    users = user_means(matrix)
    seeds_a, seeds_b = matrix["a"].mean().to_numpy(), matrix["b"].mean().to_numpy()
    mean_a, mean_b = float(users["a"].mean()), float(users["b"].mean())
    return {"metric": metric, "unit": "users", "mean_a": mean_a, "mean_b": mean_b, "diff": mean_a - mean_b,
            "relative": mean_a / mean_b - 1 if mean_b else float("nan"),
            **user_test(users["a"].to_numpy(), users["b"].to_numpy(), seed),
            "std_a": _std(seeds_a), "std_b": _std(seeds_b), "ttest_p": seed_t_p(seeds_a, seeds_b),
            "n_seeds": len(pairs)}


PAIRED_METRICS = ("auc",)  # record-level metrics recomputable from the pairs sidecar of pointwise runs


def compare_pairs(store: ResultStore, pairs: list[tuple[RunSpec, RunSpec]], metric: str,
                  seed: int = SEED) -> dict | None:
    """AUC of pointwise runs that scored the same labelled test pairs (their `pairs.csv.gz`), the user as
    the unit: a paired user-cluster bootstrap (`bench.eval.pointwise.auc_difference`) gives the 95% interval
    of the relative gain and the p of no difference (`bootstrap_p`, `unit` = "users-bootstrap"); the paired t
    over seed AUCs beside it. None when the metric is not one of `PAIRED_METRICS`, a run has no sidecar, or
    the runs did not score the same pairs (then only the seed-level t applies)."""
    from bench.eval.pointwise import auc, auc_difference

    if metric not in PAIRED_METRICS or not pairs:
        return None
    keys = ["user", "item", "label"]
    loaded = [(store.pairs(a.run_id), store.pairs(b.run_id)) for a, b in pairs]
    if any(frame is None for both in loaded for frame in both):
        return None
    frames = [tuple(f.sort_values(keys, kind="stable").reset_index(drop=True) for f in both) for both in loaded]
    shared = frames[0][0][keys]
    if not all(frame[keys].equals(shared) for both in frames for frame in both):
        return None
    users, labels = shared["user"].to_numpy(), shared["label"].to_numpy()
    scores_a = np.stack([fa["score"].to_numpy(float) for fa, _ in frames])
    scores_b = np.stack([fb["score"].to_numpy(float) for _, fb in frames])
    result = auc_difference(users, labels, scores_a, scores_b, seed=seed)
    seeds_a = np.array([auc(labels, run) for run in scores_a])
    seeds_b = np.array([auc(labels, run) for run in scores_b])
    nan = float("nan")
    return {"metric": metric, "unit": "users-bootstrap", "mean_a": result["auc_a"], "mean_b": result["auc_b"],
            "diff": result["auc_a"] - result["auc_b"], "relative": result["relative"],
            "ci_low": result["ci_low"], "ci_high": result["ci_high"], "bootstrap_p": result["p"],
            "wilcoxon_p": nan, "signflip_p": nan, "mde": nan, "effect_dz": nan,
            "std_a": _std(seeds_a), "std_b": _std(seeds_b), "ttest_p": seed_t_p(seeds_a, seeds_b),
            "n_users": result["n_users"], "n_nonzero": result["n_users"], "n_pairs": result["n_pairs"],
            "n_seeds": len(pairs)}


def compare_seeds(store: ResultStore, pairs: list[tuple[RunSpec, RunSpec]], metric: str) -> dict:
    """Record-level fallback (a metric without per-user values, e.g. AUC): paired t over seeds only;
    `unit` = "seeds", every user-level field NaN."""
    values = [(store.load(a.run_id)["metrics"].get("overall", {}).get(metric),
               store.load(b.run_id)["metrics"].get("overall", {}).get(metric)) for a, b in pairs]
    values = np.array([v for v in values if None not in v], dtype=float).reshape(-1, 2)
    if not len(values):
        return {"metric": metric, "unit": "seeds", "n_users": 0, "n_seeds": 0}
    a, b = values[:, 0], values[:, 1]
    diff = a - b
    sd = _std(diff)
    nan = float("nan")
    return {"metric": metric, "unit": "seeds", "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "diff": float(diff.mean()), "relative": float(a.mean() / b.mean() - 1) if b.mean() else nan,
            "effect_dz": float(diff.mean()) / sd if sd > 0 else nan, "std_a": _std(a), "std_b": _std(b),
            "wilcoxon_p": nan, "signflip_p": nan, "ci_low": nan, "ci_high": nan, "mde": nan,
            "ttest_p": seed_t_p(a, b), "n_users": 0, "n_nonzero": 0, "n_seeds": len(values)}


DECISIVE_P = {"users": "wilcoxon_p", "users-bootstrap": "bootstrap_p", "seeds": "ttest_p"}


def decisive_p(result: dict) -> float:
    """The p a verdict rests on: user-level Wilcoxon; for AUC on shared test pairs the paired user-cluster
    bootstrap; else the seed-level t of a record-level metric."""
    return result.get(DECISIVE_P.get(result.get("unit"), "ttest_p"), float("nan"))


CORRECTIONS = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "none": None}


def correct(pvalues: list[float], method: str = "holm") -> list[float]:
    """Multiple-comparison correction: 'holm' (default), 'bh'/'fdr_bh' (Benjamini-Hochberg) or 'none'."""
    from statsmodels.stats.multitest import multipletests

    if method not in CORRECTIONS:
        from bench.errors import UnknownChoiceError

        raise UnknownChoiceError("p-value correction", method, CORRECTIONS)
    method = CORRECTIONS[method]
    if method is None:
        return [float(p) for p in pvalues]
    values = np.asarray(pvalues, dtype=float)
    out = np.full_like(values, np.nan)
    ok = ~np.isnan(values)
    if ok.any():
        out[ok] = multipletests(values[ok], method=method)[1]
    return out.tolist()


def format_p(p: float) -> str:
    """A p-value for a table: 0.030, <0.001, — for none."""
    if p is None or p != p:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _signed(value: float) -> str:
    return f"{value:+.1f}".replace("-", "−")


def format_gain(relative: float, low: float = float("nan"), high: float = float("nan")) -> str:
    """A relative gain with its interval, in percent: +12.0% [−3.1, +27.5]."""
    if relative is None or relative != relative:
        return "—"
    text = f"{_signed(100 * relative)}%"
    return text + (f" [{_signed(100 * low)}, {_signed(100 * high)}]" if low == low and high == high else "")


def mde_line(mde_value: float, metric: str, n_users: int, where: str = "") -> str:
    """One reader-facing line: the minimum detectable effect at 80% power of a test set."""
    return (f"Minimum detectable effect at 80% power (two-sided α = 0.05): ±{100 * mde_value:.1f}% "
            f"({metric.upper()}, n = {n_users} users{where})")
