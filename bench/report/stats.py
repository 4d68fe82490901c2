"""Paired significance tests over run records: one question, one primary test, one declared family.

The question every table, `bench compare` and `bench claims` asks: would method A beat method B on this test
set if both were trained again (new seeds) and evaluated on users like these? Trained models are not fixed:
the seeds are a sample of trainings and the test users a sample of users, so the primary test resamples both.

Primary (the interval of the effect, its p, the ↑ / ↓ marks and the claims' verdicts): a paired two-level
bootstrap (`two_level_bootstrap`). Per resample, each side's seeds are drawn with replacement,
independently for A and B (a seed sets a run's initialisation and sampling; the seed s of A and the seed s
of B are separate trainings, never a pair: the split is the same for every run seed, and the users kept are
those with a value in every run of both sides), then the test users are drawn with replacement once for both
sides (paired by user). The effect is the relative gain of the resampled means, mean(A) / mean(B) - 1 (the
gain the tables print); the 95% interval its percentiles; p the two-sided bootstrap p of no difference,
2 min(#(Δ* <= 0) + 1, #(Δ* >= 0) + 1) / (R + 1) (never 0: the smallest is 2 / (R + 1)). Seeded: the same
call gives the same numbers. Every side uses all of its stored seeds (a cell given extra seeds by
`bench run --extra-seeds` brings them all).

Secondary columns, raw p (they answer narrower questions):
- the Wilcoxon signed-rank test over users of each user's seed-averaged values (trained models as fixed):
  exact (`wilcoxon_signed_rank`), with a declared zero rule (Pratt: zero differences are ranked with the
  others, then given no sign; zero-split gives the same exact p), differences rounded to `DECIMALS` before
  ranking so float noise never splits a tie; beyond `EXACT_MAX` non-zero differences the normal
  approximation with the exact conditional mean and variance of the ranks (ties and zeros included);
- Welch's t over the seed means (seeds as the unit, users fixed).

What k seeds can support (`seed_components`): the standard error of Δ has a user part (SE_users, from
resampling users with every seed kept) and a seed part SE_seeds² = s_A² / k_A + s_B² / k_B (s²: the
between-seed variance of a side's mean). With 3 seeds a side the seed bootstrap sees at most 10 distinct
seed draws and shrinks s² by (k - 1) / k, and Welch's t has 2-4 degrees of freedom; where SE_seeds exceeds
SE_users, the tables give the seeds per side the observed variance calls for: the smallest k with
(z_{1-α/2} + z_power) sqrt(SE_users² + (s_A² + s_B²) / k) <= |Δ| (the observed effect detectable at 80%
power), infinite when the users alone already leave |Δ| undetectable.

AUC of pointwise runs scored on the same test pairs is bootstrapped the same way (`compare_pairs`: each
run's exact AUC on the resampled users' pairs, `unit` = "users-bootstrap"); a metric without per-user values
falls back to Welch's t over seeds (`unit` = "seeds"). Corrections: Holm by default, Benjamini-Hochberg as an
option (statsmodels), always over a family the report names (`family_text`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from bench.records import ResultStore
from bench.spec import RunSpec

DECIMALS = 12  # per-user seed means and their differences are rounded to this before ranking
N_PERMUTATIONS = 10_000
N_BOOTSTRAP = 5_000  # resamples of the two-level (seeds, then users) and the user bootstrap
N_BOOTSTRAP_AUC = 2_000  # AUC: each resample recomputes every run's exact AUC
SEED = 0
ALPHA, POWER = 0.05, 0.8
EXACT_MAX = 500  # the exact Wilcoxon distribution up to this many non-zero differences; normal beyond
ZERO_METHOD = "pratt"
BETTER_MARK, WORSE_MARK = "↑", "↓"  # significantly better / worse than the baseline (corrected primary p)
PRIMARY = "two-level bootstrap (seeds, then users)"


def _z_power(alpha: float = ALPHA, power: float = POWER) -> float:
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


# --- data ------------------------------------------------------------------------------------------------

def seed_pairs(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec],
               match_seeds: bool = True) -> list[tuple[RunSpec, RunSpec]]:
    """(A, B) runs with both records stored: matched on seed, or in order when `match_seeds` is False."""
    if match_seeds:
        by_seed = {s.seed: s for s in runs_b}
        pairs = [(a, by_seed[a.seed]) for a in runs_a if a.seed in by_seed]
    else:
        pairs = list(zip(runs_a, runs_b))
    return [(a, b) for a, b in pairs if store.has(a.run_id) and store.has(b.run_id)]


def stored(store: ResultStore, runs: list[RunSpec]) -> list[RunSpec]:
    """The runs with a complete record, each once, by seed."""
    seen = {}
    for spec in runs:
        if spec.run_id not in seen and store.has(spec.run_id):
            seen[spec.run_id] = spec
    return sorted(seen.values(), key=lambda s: s.seed)


def _segment_values(frame: pd.DataFrame, metric: str, segment: str) -> pd.Series | None:
    """A per-user sidecar's values of `metric` on `segment`: overall, the users of a user segment
    (`user:cold`: its `user_segment` column), or a user's value on the items of an item segment (`item:tail`:
    its `tail:<metric>` column, NaN where the user has no such test item); None where the sidecar cannot tell."""
    if segment == "overall":
        column = metric
    elif segment.startswith("item:"):
        column = f"{segment.partition(':')[2]}:{metric}"
    elif segment.startswith("user:") and "user_segment" in frame.columns:
        column = metric
        frame = frame[frame["user_segment"].astype(str) == segment.partition(":")[2]]
    else:
        return None
    if column not in frame.columns:
        return None
    return frame.set_index("user")[column]


def side_matrices(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec],
                  metric: str, segment: str = "overall") -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Users (those with a value in every run of both sides, same order) x runs of `metric` (on `segment`:
    `_segment_values`), one frame per side; None when a run has no per-user `metric` (a record-level metric)
    or a side has no stored run."""
    runs_a, runs_b = stored(store, runs_a), stored(store, runs_b)
    if not runs_a or not runs_b:
        return None
    columns = []
    for spec in runs_a + runs_b:
        values = _segment_values(store.per_user(spec.run_id), metric, segment)
        if values is None:
            return None
        columns.append(values)
    both = pd.concat(columns, axis=1, keys=range(len(columns))).dropna()
    k = len(runs_a)
    return both.iloc[:, :k].set_axis([s.seed for s in runs_a], axis=1), \
        both.iloc[:, k:].set_axis([s.seed for s in runs_b], axis=1)


def paired_users(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec], metric: str) -> pd.DataFrame:
    """Per user: columns a, b = the metric averaged over each side's seeds, rounded to `DECIMALS`; empty for a
    record-level metric."""
    sides = side_matrices(store, runs_a, runs_b, metric)
    if sides is None:
        return pd.DataFrame(columns=["a", "b"])
    return pd.DataFrame({"a": sides[0].mean(axis=1).round(DECIMALS), "b": sides[1].mean(axis=1).round(DECIMALS)})


# --- Wilcoxon signed-rank, exact ---------------------------------------------------------------------------

def _signed_ranks(diff: np.ndarray, zero_method: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(doubled ranks of the non-zero differences as integers, their signs, the zeros' share of T+): the
    ranks are midranks of |diff| (rounded to `DECIMALS`), among every difference (Pratt, zero-split) or
    among the non-zero ones (Wilcoxon's rule, 'wilcox')."""
    d = np.round(np.asarray(diff, float), DECIMALS)
    if zero_method not in ("pratt", "zsplit", "wilcox"):
        raise ValueError(f"zero_method {zero_method!r}: one of pratt, zsplit, wilcox")
    pool = d[d != 0] if zero_method == "wilcox" else d
    ranks = stats.rankdata(np.abs(pool))
    zero_share = float(ranks[pool == 0].sum() / 2) if zero_method == "zsplit" else 0.0
    nonzero = pool != 0
    return np.rint(2 * ranks[nonzero]).astype(np.int64), np.sign(pool[nonzero]), zero_share


def _exact_null(doubled: np.ndarray) -> np.ndarray:
    """P(S = s), s = 0..sum(doubled): S the sum of the doubled ranks given a + sign, each sign + or - with
    probability 1/2 independently (the permutation distribution of T+ given the ranks, ties and zeros
    included)."""
    total = int(doubled.sum())
    dist = np.zeros(total + 1)
    dist[0] = 1.0
    top = 0
    for r in np.sort(doubled):
        r = int(r)
        dist[r:top + r + 1] += dist[:top + 1].copy()
        dist[:top + r + 1] *= 0.5
        top += r
    return dist


def wilcoxon_signed_rank(a, b=None, zero_method: str = ZERO_METHOD, exact_max: int = EXACT_MAX) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired values (or of differences `a` when `b` is None):
    differences rounded to `DECIMALS`, ranked with midranks under `zero_method` (pratt: zeros ranked, then
    given no sign; zsplit: half of each zero's rank to either side, the same exact p; wilcox: zeros dropped
    before ranking). Exact (the 2^n sign assignments counted by a recursion over the ranks) up to `exact_max`
    non-zero differences; beyond, the normal approximation with the exact conditional mean sum(r) / 2 and
    variance sum(r²) / 4 of T+, no continuity correction. p is 1.0 when every difference is zero.
    Returns {"p", "statistic" (T+), "n_nonzero", "method" ("exact" / "normal"), "zero_method"}."""
    diff = np.asarray(a, float) if b is None else np.asarray(a, float) - np.asarray(b, float)
    doubled, signs, zero_share = _signed_ranks(diff, zero_method)
    n = len(doubled)
    out = {"n_nonzero": n, "zero_method": zero_method}
    if n == 0:
        return {**out, "p": 1.0, "statistic": zero_share, "method": "exact"}
    t2 = int(doubled[signs > 0].sum())  # doubled T+ of the non-zero differences
    statistic = t2 / 2 + zero_share
    if n <= exact_max:
        dist = _exact_null(doubled)
        cdf, sf = float(dist[:t2 + 1].sum()), float(dist[t2:].sum())
        return {**out, "p": float(min(1.0, 2 * min(cdf, sf))), "statistic": statistic, "method": "exact"}
    ranks = doubled / 2
    z = (t2 / 2 - ranks.sum() / 2) / math.sqrt((ranks ** 2).sum() / 4)
    return {**out, "p": float(min(1.0, 2 * stats.norm.sf(abs(z)))), "statistic": statistic, "method": "normal"}


def wilcoxon_p(a, b, zero_method: str = ZERO_METHOD) -> float:
    """Two-sided Wilcoxon signed-rank p (`wilcoxon_signed_rank`); 1.0 when all pairs are equal."""
    return wilcoxon_signed_rank(a, b, zero_method)["p"]


# --- other user-level helpers ------------------------------------------------------------------------------

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
    resampling users only (paired: one index draw for every sample); seeded."""
    if len(samples[0]) < 2:
        return float("nan"), float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ci = stats.bootstrap(tuple(np.asarray(s, float) for s in samples), statistic, paired=True,
                             vectorized=True, n_resamples=n_resamples, method="percentile",
                             rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def mde(diff: np.ndarray, baseline: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect of a user-level test relative to `baseline`: (z_{1-alpha/2} + z_power)
    * sd(diff) / sqrt(n) / baseline (two-sided paired z-test over the n users' differences; trained models
    as fixed)."""
    diff = np.asarray(diff, float)
    if len(diff) < 2 or not baseline:
        return float("nan")
    return float(_z_power(alpha, power) * diff.std(ddof=1) / np.sqrt(len(diff)) / abs(baseline))


def seed_t_p(a: np.ndarray, b: np.ndarray) -> float:
    """Welch's t p over the seed means of each side (seeds as the unit, independent samples: the seed s of A
    and of B are separate trainings); NaN with fewer than two seeds a side or no variance at all."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


# --- the two-level bootstrap -------------------------------------------------------------------------------

def _count_weights(rng: np.random.Generator, size: int, n_resamples: int) -> np.ndarray:
    """[n_resamples, size] counts of a draw of `size` items with replacement (float)."""
    draws = rng.integers(0, size, (n_resamples, size))
    flat = (draws + size * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=size * n_resamples).reshape(n_resamples, size).astype(float)


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p of no difference from resampled differences: 2 min(#(Δ* <= 0) + 1,
    #(Δ* >= 0) + 1) / (R + 1), at most 1 (never 0)."""
    diffs = np.asarray(diffs, float)
    below, above = int((diffs <= 0).sum()), int((diffs >= 0).sum())
    return float(min(1.0, 2 * (min(below, above) + 1) / (len(diffs) + 1)))


def _summarise(per_run_a: np.ndarray, per_run_b: np.ndarray, seeds_w_a: np.ndarray,
               seeds_w_b: np.ndarray) -> dict:
    """From per-run statistics under each user resample ([R, k] per side) and the seed draws ([R, k] counts):
    the two-level resampled relative gains and differences, and the user-only differences (every seed)."""
    mean_a = (per_run_a * seeds_w_a).sum(axis=1) / per_run_a.shape[1]
    mean_b = (per_run_b * seeds_w_b).sum(axis=1) / per_run_b.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = mean_a / mean_b - 1
    users_only = per_run_a.mean(axis=1) - per_run_b.mean(axis=1)
    return {"relative": relative, "diff": mean_a - mean_b, "users_only": users_only}


def _interval(summary: dict) -> dict:
    rel = summary["relative"][np.isfinite(summary["relative"])]
    low, high = (np.percentile(rel, [2.5, 97.5]) if len(rel) else (np.nan, np.nan))
    return {"ci_low": float(low), "ci_high": float(high), "bootstrap_p": bootstrap_p(summary["diff"]),
            "se_users": float(np.std(summary["users_only"], ddof=1)),
            "se_bootstrap": float(np.std(summary["diff"], ddof=1))}


def two_level_bootstrap(a: np.ndarray, b: np.ndarray, seed: int = SEED, n_resamples: int = N_BOOTSTRAP) -> dict:
    """The primary test of A vs B from [users, seeds] matrices of per-user values (same users, same order; the
    seed counts may differ): per resample, each side's seeds drawn with replacement independently, then the
    users drawn with replacement once for both sides. Returns the 95% percentile interval of the relative
    gain (ci_low, ci_high), the two-sided `bootstrap_p` of no difference, SE_users (the standard deviation of
    the difference when only users are resampled) and the bootstrap standard deviation of the difference."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[0] != b.shape[0]:
        raise ValueError("two_level_bootstrap: both sides need the same users")
    rng = np.random.default_rng(seed)
    seeds_a = _count_weights(rng, a.shape[1], n_resamples)
    seeds_b = _count_weights(rng, b.shape[1], n_resamples)
    users = _count_weights(rng, a.shape[0], n_resamples) / a.shape[0]
    return _interval(_summarise(users @ a, users @ b, seeds_a, seeds_b))


def seed_components(seed_means_a, seed_means_b, se_users: float, diff: float,
                    alpha: float = ALPHA, power: float = POWER) -> dict:
    """How much of the uncertainty of Δ = mean(A) - mean(B) the seeds carry, and how many seeds it calls for.

    SE_seeds² = s_A² / k_A + s_B² / k_B (s²: variance of a side's per-seed means, ddof 1; NaN with one seed a
    side). `seed_dominated`: SE_seeds > SE_users. `seeds_needed`: the smallest k per side (both sides) for
    which z sqrt(SE_users² + (s_A² + s_B²) / k) <= |Δ|, z = z_{1-α/2} + z_power (2.80 at α 0.05, power 0.8):
    the seeds with which the observed effect is detectable at that power; inf when z SE_users >= |Δ| (more
    users, not more seeds, would be needed), NaN when a side's seed variance is unknown.
    `seed_share`: SE_seeds² / (SE_seeds² + SE_users²)."""
    a, b = np.asarray(seed_means_a, float), np.asarray(seed_means_b, float)
    nan = float("nan")
    if len(a) < 2 or len(b) < 2:
        return {"se_seeds": nan, "seed_share": nan, "seed_dominated": False, "seeds_needed": nan}
    var_a, var_b = float(a.var(ddof=1)), float(b.var(ddof=1))
    se_seeds = math.sqrt(var_a / len(a) + var_b / len(b))
    total = se_seeds ** 2 + se_users ** 2
    room = (abs(diff) / _z_power(alpha, power)) ** 2 - se_users ** 2
    if var_a + var_b == 0:
        needed = 1.0 if room > 0 else math.inf
    else:
        needed = float(math.ceil((var_a + var_b) / room)) if room > 0 else math.inf
    return {"se_seeds": se_seeds, "seed_share": se_seeds ** 2 / total if total > 0 else nan,
            "seed_dominated": bool(se_seeds > se_users), "seeds_needed": max(needed, 1.0)}


def two_level_mde(se_users: float, se_seeds: float, baseline: float, alpha: float = ALPHA,
                  power: float = POWER) -> float:
    """Minimum detectable relative effect of the primary test: z sqrt(SE_users² + SE_seeds²) / baseline
    (SE_seeds left out, i.e. users only, when a side has one seed)."""
    if not baseline or se_users != se_users:
        return float("nan")
    seeds = se_seeds if se_seeds == se_seeds else 0.0
    return float(_z_power(alpha, power) * math.sqrt(se_users ** 2 + seeds ** 2) / abs(baseline))


# --- comparisons -------------------------------------------------------------------------------------------

def compare(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec], metric: str,
            seed: int = SEED) -> dict:
    """A vs B on `metric`, every stored seed of each side: means, relative gain with the two-level interval
    and p (the primary test), the exact user-level Wilcoxon p (secondary), Welch's t over seed means
    (secondary), the two-level MDE, the seed / user split of the standard error and the seeds it calls for,
    n users (and with a non-zero difference of seed means), seeds per side. AUC on shared test pairs:
    `compare_pairs`; another metric without per-user values: `compare_seeds`."""
    sides = side_matrices(store, runs_a, runs_b, metric)
    if sides is None:
        pairs = seed_pairs(store, runs_a, runs_b)
        return (compare_pairs(store, pairs, metric, seed, runs=(stored(store, runs_a), stored(store, runs_b)))
                or compare_seeds(store, stored(store, runs_a), stored(store, runs_b), metric))
    a_frame, b_frame = sides
    if a_frame.empty:
        return {"metric": metric, "unit": "users", "n_users": 0, "n_seeds": 0}
    a, b = a_frame.to_numpy(float), b_frame.to_numpy(float)
    user_a, user_b = a.mean(axis=1).round(DECIMALS), b.mean(axis=1).round(DECIMALS)
    diff = np.round(user_a - user_b, DECIMALS)
    mean_a, mean_b = float(user_a.mean()), float(user_b.mean())
    sd = diff.std(ddof=1) if len(diff) > 1 else float("nan")
    seeds_a, seeds_b = a.mean(axis=0), b.mean(axis=0)
    boot = two_level_bootstrap(a, b, seed)
    wilcoxon = wilcoxon_signed_rank(user_a, user_b)
    parts = seed_components(seeds_a, seeds_b, boot["se_users"], mean_a - mean_b)
    return {"metric": metric, "unit": "users", "mean_a": mean_a, "mean_b": mean_b, "diff": mean_a - mean_b,
            "relative": mean_a / mean_b - 1 if mean_b else float("nan"), **boot, **parts,
            "wilcoxon_p": wilcoxon["p"], "wilcoxon_method": wilcoxon["method"],
            "signflip_p": sign_flip_p(diff, seed),
            "mde": two_level_mde(boot["se_users"], parts["se_seeds"], mean_b),
            "mde_users": mde(diff, mean_b),
            "effect_dz": float(diff.mean() / sd) if sd > 0 else float("nan"),
            "n_users": int(len(diff)), "n_nonzero": int((diff != 0).sum()),
            "std_a": _std(seeds_a), "std_b": _std(seeds_b), "ttest_p": seed_t_p(seeds_a, seeds_b),
            "n_seeds": min(len(seeds_a), len(seeds_b)), "n_seeds_a": len(seeds_a), "n_seeds_b": len(seeds_b)}


def primary_p(store: ResultStore, runs_a, runs_b, metric: str, segment: str = "overall",
              seed: int = SEED) -> float:
    """The p of the primary test of A vs B on `metric` of `segment` alone (no secondary column): the two-level
    bootstrap on the per-user values, on the shared test pairs for AUC, else Welch's t over the seeds' record
    values; NaN where neither side can be tested. Runs: objects with `run_id` and `seed`."""
    a, b = stored(store, runs_a), stored(store, runs_b)
    if not a or not b:
        return float("nan")
    sides = side_matrices(store, a, b, metric, segment)
    if sides is not None:
        if sides[0].empty:
            return float("nan")
        return two_level_bootstrap(sides[0].to_numpy(float), sides[1].to_numpy(float), seed)["bootstrap_p"]
    paired = compare_pairs(store, seed_pairs(store, a, b), metric, seed, runs=(a, b), segment=segment)
    if paired is not None:
        return paired["bootstrap_p"]
    return compare_seeds(store, a, b, metric, segment).get("ttest_p", float("nan"))


class LeadTest:
    """Whether one table cell is significantly ahead of another (the tables' bold): the primary test's p
    (`primary_p`, uncorrected: one question per column, is the best ahead of the next) below `alpha` and the
    first cell's mean above the second's. Cells are frames of runs (`run_id`, `seed` columns, one row per run
    or per run and segment); results are cached by the runs, metric and segment, so the page- and column-wide
    tables and the Markdown ask each question once."""

    def __init__(self, store: ResultStore, alpha: float = ALPHA):
        self.store, self.alpha = store, alpha
        self._p: dict[tuple, float] = {}

    @staticmethod
    def _runs(cell: pd.DataFrame) -> list:
        from types import SimpleNamespace

        runs = cell.drop_duplicates("run_id")
        return [SimpleNamespace(run_id=r, seed=int(s)) for r, s in zip(runs["run_id"], runs["seed"])]

    def p(self, cell_a: pd.DataFrame, cell_b: pd.DataFrame, metric: str, segment: str = "overall") -> float:
        """The primary p of cell A vs cell B (cached)."""
        key = (tuple(sorted(set(cell_a["run_id"]))), tuple(sorted(set(cell_b["run_id"]))), metric, segment)
        if key not in self._p:
            self._p[key] = primary_p(self.store, self._runs(cell_a), self._runs(cell_b), metric, segment)
        return self._p[key]

    def __call__(self, cell_a: pd.DataFrame, cell_b: pd.DataFrame, metric: str, segment: str = "overall") -> bool:
        """True when cell A's mean is above cell B's and the primary p < alpha."""
        if cell_a[metric].mean() <= cell_b[metric].mean():
            return False
        p = self.p(cell_a, cell_b, metric, segment)
        return p == p and p < self.alpha


PAIRED_METRICS = ("auc",)  # record-level metrics recomputable from the pairs sidecar of pointwise runs


def _auc_per_run(user_code: np.ndarray, n_users: int, labels: np.ndarray, runs: np.ndarray,
                 weights: np.ndarray) -> np.ndarray:
    """[R, n_runs]: each run's exact AUC (ties one half) on the pairs of the users resampled with `weights`
    ([R, n_users] counts): w'Cw / ((w . positives) (w . negatives)), C the run's per-user-pair win counts."""
    from bench.eval.pointwise import _user_wins

    n_pos = np.bincount(user_code[labels], minlength=n_users).astype(float)
    n_neg = np.bincount(user_code[~labels], minlength=n_users).astype(float)
    norm = (weights @ n_pos) * (weights @ n_neg)
    out = np.empty((len(weights), len(runs)))
    for j, run in enumerate(runs):
        wins = _user_wins(user_code, n_users, labels, run)
        out[:, j] = np.einsum("bu,bu->b", weights @ wins, weights) / norm
    return out


def compare_pairs(store: ResultStore, pairs: list[tuple[RunSpec, RunSpec]], metric: str,
                  seed: int = SEED, runs: tuple[list[RunSpec], list[RunSpec]] | None = None,
                  segment: str = "overall") -> dict | None:
    """AUC of pointwise runs that scored the same labelled test pairs (their `pairs.csv.gz`), by the primary
    two-level bootstrap: per resample each side's runs (seeds) drawn with replacement independently, the test
    users drawn once for both sides (each user with all its pairs), every drawn run's exact AUC on those pairs;
    the 95% interval of the relative gain of the mean AUCs and the p of no difference (`bootstrap_p`, `unit` =
    "users-bootstrap"); Welch's t over seed AUCs beside it. `runs`: every run of each side (default: the sides
    of `pairs`). `segment` (`pair:warm`): the pairs of that segment only. None when the metric is not one of
    `PAIRED_METRICS`, a run has no sidecar, or the runs did not score the same pairs (then only the seed-level t
    applies)."""
    from bench.eval.pointwise import WINS_LIMIT, auc

    side_a, side_b = runs if runs is not None else ([a for a, _ in pairs], [b for _, b in pairs])
    if metric not in PAIRED_METRICS or not side_a or not side_b:
        return None
    keys = ["user", "item", "label"]
    loaded = [store.pairs(s.run_id) for s in side_a + side_b]
    if any(frame is None for frame in loaded):
        return None
    if segment.startswith("pair:"):
        if any("segment" not in frame.columns for frame in loaded):
            return None
        loaded = [frame[frame["segment"].astype(str) == segment.partition(":")[2]] for frame in loaded]
    elif segment != "overall":
        return None
    frames = [f.sort_values(keys, kind="stable").reset_index(drop=True) for f in loaded]
    shared = frames[0][keys]
    if not all(frame[keys].equals(shared) for frame in frames):
        return None
    labels = shared["label"].to_numpy().astype(bool)
    if not labels.any() or labels.all():
        return None
    if int(labels.sum()) * int((~labels).sum()) > WINS_LIMIT:
        raise ValueError(f"{int(labels.sum())} x {int((~labels).sum())} positive x negative comparisons exceed "
                         f"WINS_LIMIT ({WINS_LIMIT}): too many test pairs for the paired AUC bootstrap")
    codes, user_code = np.unique(shared["user"].to_numpy(), return_inverse=True)
    n_users, k = len(codes), len(side_a)
    scores = np.stack([f["score"].to_numpy(float) for f in frames])
    rng = np.random.default_rng(seed)
    seeds_a = _count_weights(rng, k, N_BOOTSTRAP_AUC)
    seeds_b = _count_weights(rng, len(side_b), N_BOOTSTRAP_AUC)
    users = _count_weights(rng, n_users, N_BOOTSTRAP_AUC)
    per_run = _auc_per_run(user_code, n_users, labels, scores, users)
    boot = _interval(_summarise(per_run[:, :k], per_run[:, k:], seeds_a, seeds_b))
    seed_aucs = np.array([auc(labels, run) for run in scores])
    auc_a, auc_b = seed_aucs[:k], seed_aucs[k:]
    mean_a, mean_b = float(auc_a.mean()), float(auc_b.mean())
    parts = seed_components(auc_a, auc_b, boot["se_users"], mean_a - mean_b)
    nan = float("nan")
    return {"metric": metric, "unit": "users-bootstrap", "mean_a": mean_a, "mean_b": mean_b,
            "diff": mean_a - mean_b, "relative": mean_a / mean_b - 1, **boot, **parts,
            "wilcoxon_p": nan, "wilcoxon_method": "", "signflip_p": nan,
            "mde": two_level_mde(boot["se_users"], parts["se_seeds"], mean_b), "mde_users": nan, "effect_dz": nan,
            "std_a": _std(auc_a), "std_b": _std(auc_b), "ttest_p": seed_t_p(auc_a, auc_b),
            "n_users": n_users, "n_nonzero": n_users, "n_pairs": int(len(labels)),
            "n_seeds": min(k, len(side_b)), "n_seeds_a": k, "n_seeds_b": len(side_b)}


def compare_seeds(store: ResultStore, runs_a: list[RunSpec], runs_b: list[RunSpec], metric: str,
                  segment: str = "overall") -> dict:
    """Record-level fallback (a metric without per-user values): Welch's t over each side's seed values only
    (of `segment`); `unit` = "seeds", every user-level field NaN."""
    def values(runs):
        out = [store.load(s.run_id)["metrics"].get(segment, {}).get(metric) for s in runs]
        return np.array([v for v in out if v is not None], dtype=float)

    a, b = values(runs_a), values(runs_b)
    if not len(a) or not len(b):
        return {"metric": metric, "unit": "seeds", "n_users": 0, "n_seeds": 0}
    nan = float("nan")
    pooled = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2) if len(a) > 1 and len(b) > 1 else nan
    diff = float(a.mean() - b.mean())
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if len(a) > 1 and len(b) > 1 else nan
    return {"metric": metric, "unit": "seeds", "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "diff": diff, "relative": float(a.mean() / b.mean() - 1) if b.mean() else nan,
            "effect_dz": diff / pooled if pooled and pooled > 0 else nan, "std_a": _std(a), "std_b": _std(b),
            "wilcoxon_p": nan, "wilcoxon_method": "", "signflip_p": nan, "bootstrap_p": nan,
            "ci_low": nan, "ci_high": nan, "se_users": nan, "se_seeds": se, "seed_share": nan,
            "seed_dominated": False, "seeds_needed": nan,
            "mde": _z_power() * se / abs(b.mean()) if se == se and b.mean() else nan, "mde_users": nan,
            "ttest_p": seed_t_p(a, b), "n_users": 0, "n_nonzero": 0,
            "n_seeds": min(len(a), len(b)), "n_seeds_a": len(a), "n_seeds_b": len(b)}


DECISIVE_P = {"users": "bootstrap_p", "users-bootstrap": "bootstrap_p", "seeds": "ttest_p"}
TEST_NAMES = {"users": PRIMARY, "users-bootstrap": PRIMARY + " on the shared test pairs",
              "seeds": "Welch t over seeds (no per-user values)"}


def decisive_p(result: dict) -> float:
    """The p a verdict rests on: the two-level bootstrap (seeds and users; AUC: on the shared test pairs);
    Welch's t over seeds for a record-level metric."""
    return result.get(DECISIVE_P.get(result.get("unit"), "ttest_p"), float("nan"))


def direction(result: dict, p_corrected: float, alpha: float = ALPHA) -> str:
    """"better" / "worse" when the corrected primary p < alpha (by the sign of the effect), else ""."""
    if not (p_corrected == p_corrected and p_corrected < alpha):
        return ""
    diff = result.get("diff", float("nan"))
    return "better" if diff > 0 else "worse" if diff < 0 else ""


def as_directions(significant) -> dict[tuple, str]:
    """Marked cells as {key: "better" | "worse"}; a set of keys (the older form) marks them better."""
    if not significant:
        return {}
    if isinstance(significant, dict):
        return {k: v for k, v in significant.items() if v in ("better", "worse")}
    return {key: "better" for key in significant}


def mark(verdict: str) -> str:
    """The Markdown mark of a direction: ↑ significantly better, ↓ significantly worse, "" otherwise."""
    return {"better": BETTER_MARK, "worse": WORSE_MARK}.get(verdict, "")


# --- families ------------------------------------------------------------------------------------------------

CORRECTIONS = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "none": None}
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini–Hochberg", "fdr_bh": "Benjamini–Hochberg",
                    "none": "uncorrected"}


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


def family_text(correction: str, size: int, what: str) -> str:
    """The family a correction runs over, as a report names it: "Holm over the 20 comparisons of this table"."""
    noun = "comparison" if size == 1 else "comparisons"
    if CORRECTIONS.get(correction, correction) is None:
        return f"uncorrected (family: the {size} {noun} of {what})"
    return f"{CORRECTION_NAMES.get(correction, correction)} over the {size} {noun} of {what}"


def family_short(correction: str, size: int) -> str:
    """A corrected-p column's head: "p (Holm, 20)"."""
    if CORRECTIONS.get(correction, correction) is None:
        return f"p (uncorrected, {size})"
    return f"p ({CORRECTION_NAMES.get(correction, correction)}, {size})"


# --- formatting ------------------------------------------------------------------------------------------------

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


def format_seeds_needed(result: dict) -> str:
    """The seeds per side the observed variance calls for, shown where the seed part of the standard error
    exceeds the user part (`seed_components`): "7", "∞" (more users needed), "—" otherwise; ">999" capped."""
    if not result.get("seed_dominated"):
        return "—"
    needed = result.get("seeds_needed", float("nan"))
    if needed != needed:
        return "—"
    if math.isinf(needed):
        return "∞"
    return ">999" if needed > 999 else str(int(needed))


def format_seeds(result: dict) -> str:
    """Seeds per side: "3", or "5 / 3" when the sides differ."""
    a, b = result.get("n_seeds_a", result.get("n_seeds", 0)), result.get("n_seeds_b", result.get("n_seeds", 0))
    return str(a) if a == b else f"{a} / {b}"


def mde_line(mde_value: float, metric: str, n_users: int, where: str = "") -> str:
    """One reader-facing line: the minimum detectable effect at 80% power of the primary test."""
    return (f"Minimum detectable effect at 80% power (two-sided α = 0.05, seeds and users): ±{100 * mde_value:.1f}% "
            f"({metric.upper()}, n = {n_users} users{where})")


def method_note(correction: str, size: int, what: str, n_resamples: int = N_BOOTSTRAP) -> str:
    """What the primary test is, its family and the secondary columns, in one paragraph (tables, compare)."""
    return (f"Primary test (the gain's 95% CI, p, {BETTER_MARK} / {WORSE_MARK}): paired two-level bootstrap, "
            f"{n_resamples} resamples: each side's seeds drawn with replacement independently (A's and B's seeds are "
            "separate trainings, never paired), then the test users drawn with replacement once for both sides "
            "(paired by user); the gain is mean(A) / mean(B) − 1 of the resampled means, its interval the 2.5 / "
            "97.5 percentiles, p = 2·min(#Δ* ≤ 0 + 1, #Δ* ≥ 0 + 1) / (R + 1). Family: "
            f"{family_text(correction, size, what)}; {BETTER_MARK} significantly better, {WORSE_MARK} significantly "
            "worse (corrected p < 0.05). Secondary, raw p: Wilcoxon signed-rank over users of the seed-averaged "
            f"values (models as fixed; exact up to {EXACT_MAX} non-zero differences, normal approximation beyond; "
            f"Pratt's zero rule; differences rounded to {DECIMALS} decimals before ranking) and Welch's t over the "
            "seed means (seeds as the unit).")


def seeds_note(alpha: float = ALPHA, power: float = POWER) -> str:
    """What k seeds support and how `Seeds needed` is computed (under the significance tables and compare)."""
    return (f"Seeds: with k seeds a side the seed bootstrap sees few distinct draws (10 for k = 3) and shrinks the "
            "seed variance by (k − 1) / k, and Welch's t has 2–4 degrees of freedom. Seed share: SE_seeds² / "
            "(SE_seeds² + SE_users²), SE_seeds² = s_A²/k_A + s_B²/k_B (s²: variance of a side's per-seed means), "
            "SE_users: the difference's standard deviation when only users are resampled. Seeds needed (where "
            f"SE_seeds > SE_users): the smallest k per side with {_z_power(alpha, power):.2f}·√(SE_users² + "
            "(s_A² + s_B²)/k) ≤ |Δ|, the observed effect detectable at 80% power; ∞: the users alone leave it "
            "undetectable. `bench run --suite S --extra-seeds N --backbone B --method M,BASELINE` adds N seeds to "
            "just those cells; the tables, compare and claims use every stored seed.")
