"""Paired statistics (bench/report/stats.py): the stored LLMInit example under the two-level bootstrap, the
exact Wilcoxon and Welch's t, checked against independent computations; seeds that add no information, the
seeded bootstrap interval, the minimum detectable effect, p-value / interval formatting and the power lines
under the tables (tests/test_inference.py: the tests themselves)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.records import ResultStore
from bench.report.stats import bootstrap_interval, compare, format_gain, format_p, mde, mde_line, sign_flip_p
from bench.spec import RunSpec, expand, load_suite

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _example_runs() -> tuple[list[RunSpec], list[RunSpec]]:
    """llminit-var and random, LightGCN, ml-100k half_history, from the coldstart suite."""
    specs = [s for s in expand(load_suite("coldstart")) if s.dataset == "ml-100k"
             and s.split == "half_history" and s.backbone == "lightgcn"]
    runs = {m: sorted((s for s in specs if s.method == m), key=lambda s: s.seed) for m in ("llminit-var", "random")}
    if not all((RESULTS / "runs" / s.run_id / "per_user.csv.gz").exists() for r in runs.values() for s in r):
        pytest.skip("the stored coldstart records are not in results/")
    return runs["llminit-var"], runs["random"]


def _seed_means(runs: list[RunSpec]) -> pd.Series:
    """Independently of bench: each user's ndcg@10 averaged over the runs (users present in all)."""
    frames = [pd.read_csv(RESULTS / "runs" / s.run_id / "per_user.csv.gz", dtype={"user": str})
              .set_index("user")["ndcg@10"] for s in runs]
    return pd.concat(frames, axis=1, join="inner").dropna().mean(axis=1)


def test_user_level_tests_on_the_stored_llminit_example():
    runs_a, runs_b = _example_runs()
    result = compare(ResultStore(RESULTS), runs_a, runs_b, "ndcg@10")
    a, b = _seed_means(runs_a), _seed_means(runs_b)
    users = a.index.intersection(b.index)
    a, b = a[users].round(12), b[users].round(12)
    assert result["n_users"] == len(users) == 938 and result["n_nonzero"] == int((a != b).sum()) == 79
    assert result["relative"] == pytest.approx(a.mean() / b.mean() - 1) == pytest.approx(0.1469, abs=5e-4)
    # primary: the two-level bootstrap (seeds, then users): the interval covers 0, p 0.085 (seeded)
    assert result["ci_low"] < 0 < result["relative"] < result["ci_high"]
    assert result["ci_low"] == pytest.approx(-0.014, abs=2e-3) and result["ci_high"] == pytest.approx(0.378, abs=2e-3)
    assert result["bootstrap_p"] == pytest.approx(0.085, abs=2e-3)
    # secondary: the exact Wilcoxon with Pratt's zero rule. 859 of the 938 users have a zero difference, so the
    # non-zero ones hold ranks 860-938 and the test is nearly a sign test: p 0.500, where dropping the zeros
    # before ranking (Wilcoxon's rule, scipy's default, which then took the normal approximation) gave 0.048
    assert result["wilcoxon_method"] == "exact" and result["wilcoxon_p"] == pytest.approx(0.5001, abs=1e-4)
    d = (a - b).to_numpy()
    monte_carlo = stats.wilcoxon(d, zero_method="pratt", method=stats.PermutationMethod(
        n_resamples=20_000, rng=np.random.default_rng(1))).pvalue
    assert result["wilcoxon_p"] == pytest.approx(monte_carlo, abs=0.015)
    assert stats.wilcoxon(a, b).pvalue == pytest.approx(0.0478, abs=5e-4)
    # Welch's t over the 3 seed means of each side (seeds never paired)
    seed_a = [pd.read_csv(RESULTS / "runs" / s.run_id / "per_user.csv.gz")["ndcg@10"].mean() for s in runs_a]
    seed_b = [pd.read_csv(RESULTS / "runs" / s.run_id / "per_user.csv.gz")["ndcg@10"].mean() for s in runs_b]
    assert result["ttest_p"] == pytest.approx(stats.ttest_ind(seed_a, seed_b, equal_var=False).pvalue, rel=1e-6)
    assert result["ttest_p"] == pytest.approx(0.114, abs=5e-4)
    assert result["signflip_p"] == pytest.approx(0.030, abs=0.01)  # Monte Carlo, 10000 sign flips
    # what the old pooled (users x seeds) test says: 0.0025, about twenty times too confident
    pooled = pd.concat([pd.read_csv(RESULTS / "runs" / x.run_id / "per_user.csv.gz", dtype={"user": str})
                        .merge(pd.read_csv(RESULTS / "runs" / y.run_id / "per_user.csv.gz", dtype={"user": str}),
                               on="user") for x, y in zip(runs_a, runs_b)])
    assert stats.wilcoxon(pooled["ndcg@10_x"], pooled["ndcg@10_y"]).pvalue == pytest.approx(0.0025, abs=5e-5)


def _copies(store: ResultStore, method: str, values: np.ndarray, seeds: int) -> list[RunSpec]:
    """`seeds` runs of `method` whose per-user values are identical: perfectly correlated seeds."""
    runs = []
    for seed in range(seeds):
        run = RunSpec(dataset="ml-100k", split="half_history", backbone="lightgcn", method=method, seed=seed)
        per_user = pd.DataFrame({"user": [str(u) for u in range(len(values))], "ndcg@10": values})
        store.write(run.run_id, {"status": "complete", "run_id": run.run_id, "spec": run.model_dump(mode="json"),
                                 "metrics": {"overall": {"ndcg@10": float(values.mean())}}}, per_user)
        runs.append(run)
    return runs


def test_perfectly_correlated_seeds_add_no_significance(tmp_path):
    rng = np.random.default_rng(7)
    b = rng.uniform(0.1, 0.5, 40)
    a = b + rng.normal(0.02, 0.08, 40)
    store = ResultStore(tmp_path)
    user_p, boot, pooled_p = {}, {}, {}
    for seeds in (1, 5):
        runs_a = _copies(store, "llminit-var", a, seeds)
        runs_b = _copies(store, "random", b, seeds)
        result = compare(store, runs_a, runs_b, "ndcg@10")
        assert result["n_users"] == 40 and result["n_seeds"] == seeds
        user_p[seeds] = (result["wilcoxon_p"], result["signflip_p"], result["mde_users"])
        boot[seeds] = (result["bootstrap_p"], result["ci_low"], result["ci_high"], result["mde"])
        pooled_p[seeds] = stats.wilcoxon(np.tile(a, seeds), np.tile(b, seeds)).pvalue
        # copies carry no seed variance; one seed a side cannot estimate it
        assert result["se_seeds"] == 0 if seeds > 1 else np.isnan(result["se_seeds"])
    assert user_p[5] == pytest.approx(user_p[1], rel=1e-12)  # five copies of a seed are one seed
    # the two-level bootstrap too, up to Monte Carlo error (its draws differ with the number of seeds)
    assert boot[5] == pytest.approx(boot[1], abs=0.02)
    # no zeros and no ties: the exact test is scipy's exact test
    assert user_p[1][0] == pytest.approx(stats.wilcoxon(a.round(12), b.round(12), method="exact").pvalue,
                                         rel=1e-9)
    assert 0.01 < user_p[1][0] < 0.5
    assert pooled_p[5] < pooled_p[1] / 10  # pooling users x seeds inflates significance


def test_sign_flip_is_exact_for_few_users():
    diff = np.array([0.5, 1.0, -0.2, 0.3, 0.0, 0.8])  # the zero cannot flip
    observed = abs(diff.mean())
    flips = [abs((diff * np.array(s)).mean()) >= observed - 1e-12 for s in itertools.product([1, -1], repeat=6)]
    assert sign_flip_p(diff) == pytest.approx(np.mean(flips)) == pytest.approx(0.125)
    assert sign_flip_p(np.zeros(5)) == 1.0


def test_bootstrap_interval_is_seeded_and_covers_the_estimate():
    rng = np.random.default_rng(3)
    b = rng.uniform(0.0, 1.0, 300)
    a = b * 1.1 + rng.normal(0, 0.2, 300)
    estimate = a.mean() / b.mean() - 1
    first, again = bootstrap_interval((a, b)), bootstrap_interval((a, b))
    assert first == again
    assert first != bootstrap_interval((a, b), seed=1)
    assert first[0] < estimate < first[1]
    # a plain numpy resample of users gives the same interval up to Monte Carlo error
    idx = np.random.default_rng(0).integers(0, 300, (5000, 300))
    plain = np.percentile(a[idx].mean(axis=1) / b[idx].mean(axis=1) - 1, [2.5, 97.5])
    assert first == pytest.approx(tuple(plain), abs=0.01)


def test_minimum_detectable_effect():
    from statsmodels.stats.power import NormalIndPower

    diff = np.random.default_rng(5).normal(0.001, 0.05, 938)
    baseline = 0.03
    by_hand = (1.959964 + 0.841621) * diff.std(ddof=1) / np.sqrt(938) / baseline
    assert mde(diff, baseline) == pytest.approx(by_hand, rel=1e-6)
    effect = NormalIndPower().solve_power(nobs1=938, alpha=0.05, power=0.8, ratio=0)  # one-sample z
    assert mde(diff, baseline) == pytest.approx(effect * diff.std(ddof=1) / baseline, rel=1e-3)
    assert mde_line(0.201, "ndcg@10", 938) == ("Minimum detectable effect at 80% power (two-sided α = 0.05, seeds "
                                               "and users): ±20.1% (NDCG@10, n = 938 users)")


def test_formatting():
    assert [format_p(p) for p in (0.0301, 4.098e-05, 1.0, float("nan"))] == ["0.030", "<0.001", "1.000", "—"]
    assert format_gain(0.12, -0.031, 0.275) == "+12.0% [−3.1, +27.5]"
    assert format_gain(-0.214) == "−21.4%"


def test_coldstart_tables_carry_the_user_level_tests_and_power_lines(tmp_path):
    from bench.report.tables import write_tables

    _example_runs()
    suite = load_suite("coldstart")
    written = write_tables(suite, expand(suite), ResultStore(RESULTS), tmp_path, formats=("markdown",))
    significance = written["significance.md"].read_text()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in significance.splitlines()[:40]]
    header = rows[0]
    # Markdown prints display names (the key beneath maps them to the ids)
    row = dict(zip(header, next(r for r in rows if r[:4] == ["ml-100k", "Half history", "LightGCN", "LLMInit-var"])))
    assert row["Gain % [95% CI]"] == "+14.7% [−1.4, +37.8]" and row["p"] == "0.085"
    assert row["Wilcoxon p (users)"] == "0.500" and row["Welch t p (seeds)"] == "0.114"
    assert row["Users (≠ 0)"] == "938 (79)" and row["Significant"] == "no" and row["Seeds"] == "3"
    family = [h for h in header if h.startswith("p (Holm, ")]
    assert len(family) == 1 and f"Holm over the {family[0][9:-1]} comparisons of `coldstart/significance.md`" in (
        significance)
    main = written["main.md"].read_text()
    for text in (significance, main):
        assert ("Minimum detectable effect at 80% power (two-sided α = 0.05, seeds and users): ±" in text
                and "n = 938 users, ml-100k/half_history" in text)
    assert "Minimum detectable effect" not in written["segments.md"].read_text()
    assert "Key: Half history = half_history;" in significance and "LLMInit-var = llminit-var" in significance
