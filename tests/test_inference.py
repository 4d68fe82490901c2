"""Inference over seeds and users (issue 24): the exact Wilcoxon with its zero rule against scipy and brute
force, the two-level bootstrap against a plain loop and on seed-dominated data, the seed components and the
seeds they call for, every seed of each side used, `bench run --extra-seeds`, one named family per report,
directional marks, and the claims' verdicts (holds / reversed / inconclusive / not run, one test per part)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.cli import main
from bench.records import ResultStore
from bench.report.stats import (
    N_BOOTSTRAP,
    bootstrap_p,
    compare,
    format_seeds,
    format_seeds_needed,
    seed_components,
    two_level_bootstrap,
    wilcoxon_signed_rank,
)
from bench.spec import RunSpec, with_extra_seeds, with_stored_seeds

# --- the exact Wilcoxon signed-rank test -------------------------------------------------------------------


def brute_force_wilcoxon(d, zero_method: str) -> float:
    """Every sign assignment of the non-zero differences enumerated: two-sided p of T+ (ranks by the rule)."""
    d = np.round(np.asarray(d, float), 12)
    pool = d[d != 0] if zero_method == "wilcox" else d
    ranks = stats.rankdata(np.abs(pool))
    nonzero = pool != 0
    r, observed = ranks[nonzero], ranks[nonzero][pool[nonzero] > 0].sum()
    totals = np.array([np.dot(r, signs) for signs in itertools.product([0, 1], repeat=len(r))])
    low, high = np.mean(totals <= observed + 1e-9), np.mean(totals >= observed - 1e-9)
    return min(1.0, 2 * min(low, high))


def test_exact_wilcoxon_is_scipys_exact_test_without_ties_or_zeros():
    rng = np.random.default_rng(0)
    for n in (5, 9, 14, 25, 40):
        a, b = rng.normal(0.3, 1, n), rng.normal(0, 1, n)
        expected = stats.wilcoxon(a, b, method="exact").pvalue
        for rule in ("pratt", "zsplit", "wilcox"):  # no zeros: the rules agree
            result = wilcoxon_signed_rank(a, b, rule)
            assert result["method"] == "exact" and result["p"] == pytest.approx(expected, rel=1e-10), (n, rule)


@pytest.mark.parametrize("d", [
    [0.0, 0.0, 0.1, -0.1, 0.2, 0.2, -0.3, 0.4, 0.4, 0.4, 0.0, -0.05],
    [0.0, 1.0, 1.0, 1.0, -1.0, 2.0, 0.0, 0.0, 3.0, -3.0],
    [0.5, 0.5, 0.5, 0.5, 0.0, -0.5, 0.25],
    [0.0, 0.0, 0.0, 0.3],
])
def test_exact_wilcoxon_with_ties_and_zeros_is_the_permutation_distribution(d):
    d = np.array(d)
    exact = stats.PermutationMethod(n_resamples=np.inf)  # scipy enumerates all 2^n sign flips
    for rule in ("pratt", "zsplit", "wilcox"):
        ours = wilcoxon_signed_rank(d, zero_method=rule)
        assert ours["method"] == "exact"
        assert ours["p"] == pytest.approx(brute_force_wilcoxon(d, rule), abs=1e-12), rule
        assert ours["p"] == pytest.approx(stats.wilcoxon(d, zero_method=rule, method=exact).pvalue, abs=1e-12), rule
    # zero-split puts half of each zero's rank on both sides, a constant: the same exact p as Pratt
    assert wilcoxon_signed_rank(d, zero_method="zsplit")["p"] == wilcoxon_signed_rank(d, zero_method="pratt")["p"]


def test_every_difference_zero_gives_one_and_the_normal_approximation_matches_scipy_beyond_the_limit():
    assert wilcoxon_signed_rank(np.zeros(8))["p"] == 1.0 and wilcoxon_signed_rank([0.2] * 3, [0.2] * 3)["p"] == 1.0
    rng = np.random.default_rng(4)
    d = np.round(rng.normal(0.05, 1, 700), 1)  # many ties, some zeros
    d[:150] = 0
    normal = wilcoxon_signed_rank(d, zero_method="pratt", exact_max=100)
    assert normal["method"] == "normal"
    scipy_normal = stats.wilcoxon(d, zero_method="pratt", method="asymptotic", correction=False).pvalue
    assert normal["p"] == pytest.approx(scipy_normal, rel=1e-9)
    exact = wilcoxon_signed_rank(d, zero_method="pratt", exact_max=1000)
    assert exact["method"] == "exact" and exact["p"] == pytest.approx(normal["p"], abs=0.01)


def test_differences_are_rounded_before_ranking():
    """0.3 - 0.1 and 0.2 - 0.0 are one tie, not two ranks split by float noise."""
    a = np.array([0.3, 0.2, 0.7, 0.5, 0.9, 0.6])
    b = np.array([0.1, 0.0, 0.1, 0.3, 0.2, 0.8])
    assert len({x - y for x, y in zip(a, b)}) == 5 and (0.3 - 0.1) != (0.2 - 0.0)  # float noise
    clean = np.array([0.2, 0.2, 0.6, 0.2, 0.7, -0.2])
    assert wilcoxon_signed_rank(a, b)["p"] == wilcoxon_signed_rank(clean)["p"] == pytest.approx(
        brute_force_wilcoxon(clean, "pratt"))


def test_zeros_no_longer_push_a_few_non_zero_users_to_the_normal_approximation():
    """The issue's case: 930 users with a zero difference, 12 without. scipy, given the zeros, leaves its exact
    test for the normal approximation; the exact test on the same rule enumerates the 2^12 sign flips."""
    d = np.zeros(942)
    d[:12] = [0.5, 0.4, 0.33, 0.25, 0.2, 0.125, 0.1, -0.09, 0.08, -0.07, 0.06, 0.05]
    scipy_default = stats.wilcoxon(d).pvalue  # zero_method wilcox, method auto -> asymptotic (zeros present)
    ours = wilcoxon_signed_rank(d, zero_method="wilcox")
    assert ours["method"] == "exact" and ours["p"] == pytest.approx(brute_force_wilcoxon(d[:12], "wilcox"))
    assert abs(ours["p"] - scipy_default) > 0.002
    assert wilcoxon_signed_rank(d)["p"] == pytest.approx(brute_force_wilcoxon(d, "pratt"))  # Pratt: the default


# --- the two-level bootstrap --------------------------------------------------------------------------------


def _loop_bootstrap(a, b, seed=0, n=N_BOOTSTRAP):
    """The same draws as `two_level_bootstrap`, one resample at a time: A's seeds, B's seeds, then users."""
    rng = np.random.default_rng(seed)
    seeds_a = rng.integers(0, a.shape[1], (n, a.shape[1]))
    seeds_b = rng.integers(0, b.shape[1], (n, b.shape[1]))
    users = rng.integers(0, a.shape[0], (n, a.shape[0]))
    mean_a = np.array([a[users[r]][:, seeds_a[r]].mean() for r in range(n)])
    mean_b = np.array([b[users[r]][:, seeds_b[r]].mean() for r in range(n)])
    return mean_a / mean_b - 1, mean_a - mean_b


def test_two_level_bootstrap_is_a_loop_over_seeds_then_users_and_is_seeded():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 1, (60, 3)) + np.array([0.0, 0.1, 0.3])
    b = rng.uniform(0, 1, (60, 4))
    result = two_level_bootstrap(a, b, n_resamples=800)
    relative, diff = _loop_bootstrap(a, b, n=800)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(tuple(np.percentile(relative, [2.5, 97.5])))
    assert result["bootstrap_p"] == pytest.approx(bootstrap_p(diff))
    assert result == two_level_bootstrap(a, b, n_resamples=800)
    assert result != two_level_bootstrap(a, b, seed=1, n_resamples=800)


def test_seed_variance_enters_the_interval_and_p():
    """Users agree (A above B for nearly every user) but the seeds do not (one seed of B far below, as SGL
    random seed 0 on the warm split): the user-level test is certain, the two-level one is not."""
    rng = np.random.default_rng(5)
    base = rng.uniform(0.02, 0.08, 500)
    a = np.stack([base * f + rng.normal(0, 0.005, 500) for f in (1.0, 1.3, 1.6)], axis=1)
    b = np.stack([base * f + rng.normal(0, 0.005, 500) for f in (0.4, 1.1, 1.3)], axis=1)
    result = two_level_bootstrap(a, b)
    user_a, user_b = a.mean(axis=1), b.mean(axis=1)
    assert wilcoxon_signed_rank(user_a, user_b)["p"] < 1e-6  # models as fixed: overwhelming
    assert result["bootstrap_p"] > 0.05 and result["ci_low"] < 0 < result["ci_high"]
    parts = seed_components(a.mean(axis=0), b.mean(axis=0), result["se_users"], user_a.mean() - user_b.mean())
    assert parts["seed_dominated"] and parts["seed_share"] > 0.9 and format_seeds_needed(parts).isdigit()
    # the same users with identical seeds: only users vary, the interval is the user bootstrap's
    same = two_level_bootstrap(np.repeat(user_a[:, None], 3, 1), np.repeat(user_b[:, None], 3, 1))
    assert same["bootstrap_p"] == pytest.approx(2 / (N_BOOTSTRAP + 1)) and same["ci_low"] > 0


def test_bootstrap_p_is_never_zero_and_one_when_nothing_differs():
    assert bootstrap_p(np.ones(999)) == pytest.approx(2 / 1000)
    assert bootstrap_p(np.zeros(999)) == 1.0
    assert bootstrap_p(np.r_[-np.ones(25), np.ones(975)]) == pytest.approx(2 * 26 / 1001)


def test_seed_components_and_the_seeds_they_call_for():
    seeds_a, seeds_b = np.array([0.050, 0.049, 0.055]), np.array([0.017, 0.050, 0.050])
    se_users, diff = 0.003, seeds_a.mean() - seeds_b.mean()
    parts = seed_components(seeds_a, seeds_b, se_users, diff)
    var = seeds_a.var(ddof=1) + seeds_b.var(ddof=1)
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert parts["se_seeds"] == pytest.approx(np.sqrt(seeds_a.var(ddof=1) / 3 + seeds_b.var(ddof=1) / 3))
    k = parts["seeds_needed"]
    assert z * np.sqrt(se_users ** 2 + var / k) <= abs(diff) < z * np.sqrt(se_users ** 2 + var / (k - 1))
    assert parts["seed_dominated"] and format_seeds_needed(parts) == str(int(k))
    # the users alone leave the effect undetectable: no number of seeds does it
    assert seed_components(seeds_a, seeds_b, 0.01, diff)["seeds_needed"] == np.inf
    assert format_seeds_needed({**parts, "seeds_needed": np.inf}) == "∞"
    assert format_seeds_needed({**parts, "seed_dominated": False}) == "—"
    assert np.isnan(seed_components([0.1], [0.2, 0.3], 0.01, 0.1)["seeds_needed"])  # one seed: unknown


# --- stores, seeds per side, extra seeds ---------------------------------------------------------------------

N_USERS = 150


def spec(method="random", seed=0, split="half_history"):
    return RunSpec(dataset="ml-100k", split=split, split_settings={"seed": 0}, backbone="lightgcn",
                   backbone_settings={"embedding_size": 128, "epochs": 3}, method=method,
                   encoder="minilm" if method.startswith("llminit") else None, seed=seed)


def put(store: ResultStore, run: RunSpec, level: float, noise: float = 0.02, users_seed: int = 0) -> None:
    """Per-user ndcg@10: a user effect shared by every run (fixed by `users_seed`) + `level` + run noise."""
    users = np.random.default_rng(users_seed).uniform(-0.05, 0.05, N_USERS)
    rng = np.random.default_rng(int(run.run_id[:8], 16))
    values = np.clip(0.2 + users + level + rng.normal(0, noise, N_USERS), 0, 1)
    per_user = pd.DataFrame({"user": [str(u) for u in range(N_USERS)], "ndcg@10": values})
    overall = {m: float(values.mean()) * (2 if m.startswith("recall") else 1)
               for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}
    store.write(run.run_id, {"status": "complete", "run_id": run.run_id, "spec": run.model_dump(mode="json"),
                             "metrics": {"overall": {**overall, "n_users": N_USERS}},
                             "params": {"trainable": 10}, "latency": {"median_ms": 1.0}, "timings": {"train": 1.0},
                             "provenance": {"split_hash": "x"}}, per_user)


def test_compare_uses_every_seed_of_each_side(tmp_path):
    store = ResultStore(tmp_path)
    runs_a = [spec("llminit-var", s) for s in range(5)]
    runs_b = [spec("random", s) for s in range(3)]
    for run in runs_a:
        put(store, run, 0.03)
    for run in runs_b:
        put(store, run, 0.0)
    result = compare(store, runs_a, runs_b, "ndcg@10")
    assert (result["n_seeds_a"], result["n_seeds_b"], result["n_seeds"]) == (5, 3, 3)
    assert format_seeds(result) == "5 / 3"
    seed_means = [store.per_user(r.run_id)["ndcg@10"].mean() for r in runs_a]
    assert result["mean_a"] == pytest.approx(np.mean(seed_means))
    assert result["ttest_p"] == pytest.approx(stats.ttest_ind(
        seed_means, [store.per_user(r.run_id)["ndcg@10"].mean() for r in runs_b], equal_var=False).pvalue)


def test_extra_seeds_are_added_to_chosen_cells_and_found_by_the_tables(tmp_path, monkeypatch, capsys):
    import bench.executors

    base = [spec("random", 0), spec("random", 1), spec("llminit-var", 0), spec("llminit-var", 1)]
    more = with_extra_seeds(base, 2)
    assert sorted((s.method, s.seed) for s in more[4:]) == [("llminit-var", 2), ("llminit-var", 3),
                                                            ("random", 2), ("random", 3)]
    assert with_extra_seeds(base, 2) == more  # the same count again: the same runs (finished ones are skipped)
    assert {s.run_id for s in more[4:]} == {spec(m, s).run_id for m in ("random", "llminit-var") for s in (2, 3)}
    store = ResultStore(tmp_path / "results")
    for run in [*base, spec("random", 2), spec("random", 3), spec("random", 5)]:  # 4 missing: 5 is not found
        put(store, run, 0.0)
    found = with_stored_seeds(base, store.has)
    assert sorted((s.method, s.seed) for s in found[4:]) == [("random", 2), ("random", 3)]

    seen = []

    def fake_run_specs(specs, *args, **kwargs):
        seen.extend((s.method, s.seed) for s in specs)
        return {"done": len(specs), "skipped": 0, "failed": {}}

    monkeypatch.setattr(bench.executors, "run_specs", fake_run_specs)
    argv = ["run", "--suite", "smoke", "--method", "llminit-var", "--extra-seeds", "3", "--no-table",
            "--results", str(tmp_path / "other")]
    assert main(argv) == 0
    assert sorted(seen) == [("llminit-var", s) for s in range(4)]  # the suite's seed 0, then 1-3, that cell only
    assert main(["run", "--dataset", "ml-100k", "--split", "temporal_loo", "--backbone", "lightgcn", "--method",
                 "random", "--extra-seeds", "2", "--results", str(tmp_path / "other")]) == 2
    assert "--extra-seeds adds seeds to cells of a suite" in capsys.readouterr().err
    assert main(argv[:6] + ["0"] + argv[7:]) == 2


def test_tables_use_the_extra_seeds_and_name_the_family_and_the_marks(tmp_path):
    from bench.report.tables import write_tables
    from bench.spec import Suite, expand

    suite = Suite(name="tiny", description="tiny", datasets=["ml-100k"], splits=["half_history"],
                  backbones=["lightgcn"], methods=["random", "llminit-var", "llminit-rand"], seeds=[0, 1, 2],
                  encoder="minilm")
    specs = expand(suite)
    store = ResultStore(tmp_path / "results")
    levels = {"random": 0.0, "llminit-var": 0.04, "llminit-rand": -0.04}
    for run in specs:
        put(store, run, levels[run.method], noise=0.01)
    extra = [s for s in with_extra_seeds([s for s in specs if s.method == "llminit-var"], 2)
             if s.seed > 2]
    for run in extra:
        put(store, run, levels[run.method], noise=0.01)
    written = write_tables(suite, specs, store, tmp_path / "out", formats=("markdown", "latex"))
    significance = written["significance.md"].read_text()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in significance.splitlines()[:4]]
    table = {row[3]: dict(zip(rows[0], row)) for row in rows[2:]}
    # Markdown prints display names (names.yaml; the key line under the table maps them to the ids)
    assert table["LLMInit-var"]["Seeds"] == "5 / 3" and table["LLMInit-rand"]["Seeds"] == "3"
    assert table["LLMInit-var"]["Significant"] == "better" and table["LLMInit-rand"]["Significant"] == "worse"
    assert "p (Holm, 2)" in rows[0]
    assert "Holm over the 2 comparisons of `tiny/significance.md` (one per row)" in significance
    assert "extra seeds (`bench run --extra-seeds`): ml-100k/half_history/lightgcn/llminit-var 3–4" in significance
    main_md = written["main.md"].read_text()
    assert "↑ / ↓ on ndcg@10: significantly better / worse than `random`" in main_md
    cells = {line.split("|")[2].strip(): line for line in main_md.splitlines()[2:4 + 1] if line.startswith("|")}
    assert "↑" in cells["LLMInit-var"] and "↓" in cells["LLMInit-rand"]
    for name in ("main.tex", "main_column.tex", "significance.tex"):
        tex = written[name].read_text()
        assert "\\uparrow" in tex and "\\downarrow" in tex and "over the 2 comparisons of" in tex, name


# --- claims: one comparison each ----------------------------------------------------------------------------


def test_claim_verdicts_holds_reversed_inconclusive_not_run_with_the_family(tmp_path):
    from bench.report.claims import Claim, ClaimsFile, check_claims, claims_table, render_claims

    store = ResultStore(tmp_path / "results")
    for seed in range(3):
        put(store, spec("random", seed), 0.0)
        put(store, spec("llminit-var", seed), 0.04)
        put(store, spec("llminit-rand", seed), -0.04)
        # seed-dominated: users agree, the seeds of A scatter widely (one far below)
        put(store, spec("llminit-uni", seed), (0.04, 0.04, -0.02)[seed], noise=0.005)
    claims = ClaimsFile(claims=[
        Claim(id="holds", text="", kind="better", a={"method": "llminit-var"}, b={"method": "random"}),
        Claim(id="reversed", text="", kind="better", a={"method": "llminit-rand"}, b={"method": "random"}),
        Claim(id="inconclusive", text="", kind="better", a={"method": "llminit-uni"}, b={"method": "random"}),
        Claim(id="chain", text="", kind="order",
              chain=[{"method": "llminit-var"}, {"method": "llminit-uni"}, {"method": "llminit-rand"}]),
        Claim(id="missing", text="", kind="better", a={"method": "pte"}, b={"method": "random"})])
    results = check_claims(store, claims)
    status = {r.claim.id: r.status(0.05) for r in results}
    assert {k: v[0] for k, v in status.items()} == {"holds": "holds", "reversed": "reversed",
                                                    "inconclusive": "inconclusive", "chain": "inconclusive",
                                                    "missing": "not run"}
    assert "detectable ±" in status["inconclusive"][1] and "p (Holm, 5)" in status["inconclusive"][1]
    weak = results[2].comparisons[0]
    assert weak.ci[0] < 0 < weak.ci[1] and weak.p_corr >= 0.05  # the interval and the p of one test agree
    assert weak.wilcoxon_p < 0.001  # users alone (models as fixed) would have called it
    table = claims_table(results, 0.05)
    chain = table[table["Claim"] == "chain"]
    assert len(chain) == 2 and set(chain["Verdict"]) <= {"holds", "inconclusive"}
    assert table.set_index("Claim").loc["missing", "Verdict"] == "not run"
    text = render_claims(results, claims, "holm", store)
    assert "Family: Holm over the 5 comparisons of claims.md" in text and "| p (Holm, 5) " in text
    assert "Parts (one row per comparison" in text


def test_larger_gain_is_one_bootstrap_of_the_difference_of_gains(tmp_path):
    from bench.report.claims import Claim, ClaimsFile, check_claims, gain_difference

    store = ResultStore(tmp_path / "results")
    for seed in range(3):
        put(store, spec("random", seed), 0.0)
        put(store, spec("llminit-var", seed), 0.06)
        put(store, spec("random", seed, "temporal_loo"), 0.0)
        put(store, spec("llminit-var", seed, "temporal_loo"), 0.005)
    claim = Claim(id="gain", text="", kind="larger_gain", a={"method": "llminit-var"}, b={"method": "random"},
                  larger={"split": "half_history"}, smaller={"split": "temporal_loo"})
    result, = check_claims(store, ClaimsFile(claims=[claim]))
    c = result.comparisons[0]
    assert result.status(0.05)[0] == "holds" and c.ci[0] < c.effect < c.ci[1] and c.ci[0] > 0
    assert "one user draw for both contexts" in c.test
    rng = np.random.default_rng(0)
    users = rng.uniform(0, 1, 40) + 0.1
    steady = (np.repeat(users[:, None] * 1.2, 3, 1), np.repeat(users[:, None], 3, 1))  # seeds without variance
    flat = gain_difference(steady, steady, paired=True, n_resamples=500)
    assert flat["ci_low"] == flat["ci_high"] == 0 and flat["p"] == 1.0  # a context against itself, same users
    noisy = (steady[0] + rng.normal(0, 0.05, (40, 3)), steady[1])
    spread = gain_difference(noisy, noisy, paired=True, n_resamples=500)  # their seeds are drawn apart
    assert spread["ci_low"] < 0 < spread["ci_high"] and spread["p"] > 0.05
