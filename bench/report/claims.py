"""The papers' directional findings as checks over whatever runs the result store holds.

A claims file (bench/report/claims.yaml) lists claims of four kinds, each over runs selected by spec fields
(see bench/selection.py), never by suite membership:
- `better`: A > B on `metric` (inside one context: same data, split, backbone settings);
- `order`: a chain, each entry > the next (one comparison per link);
- `larger_gain`: the relative gain of A over B is larger in context `larger` than in `smaller`;
- `falls_after`: with `axis` (a LAYER.KEY setting) above `at`, the metric is lower than at `at` (one
  comparison per value above).

Every comparison is one test: its effect, its 95% interval and its p all come from it, at the same level
(bench/report/stats.py's primary test, the paired two-level bootstrap: each side's seeds, then the users,
resampled; for `larger_gain` the difference of the two relative gains under the same resampling, one user
draw for both contexts where they share their test users). The family of the correction is every
comparison of the file (Holm by default), named in the report with its size. A comparison's verdict:
*holds* (claimed direction, corrected p < alpha), *reversed* (the other direction, corrected p < alpha),
*inconclusive* (corrected p >= alpha; the report gives the effect the test could detect at 80% power). A
claim holds when every part holds, is reversed when any part is, inconclusive otherwise, and *not run* when
its runs are missing; a multi-part claim shows every part. The user-level Wilcoxon (models as fixed) and
Welch's t over seeds are reported beside each part, raw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import stats as sps

from bench.errors import BenchError
from bench.records import ResultStore
from bench.report.stats import (
    N_BOOTSTRAP,
    SEED,
    TEST_NAMES,
    compare,
    correct,
    decisive_p,
    format_gain,
    format_p,
    format_seeds,
    format_seeds_needed,
    paired_users,
    wilcoxon_p,
)
from bench.selection import Pairing, pair, stored_specs
from bench.spec import RunSpec


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    text: str
    paper: str = ""
    kind: Literal["better", "order", "larger_gain", "falls_after"]
    metric: str = "ndcg@10"
    where: dict[str, Any] = Field(default_factory=dict)  # every side
    a: dict[str, Any] = Field(default_factory=dict)  # better, larger_gain
    b: dict[str, Any] = Field(default_factory=dict)
    chain: list[dict[str, Any]] = Field(default_factory=list)  # order: best first
    larger: dict[str, Any] = Field(default_factory=dict)  # larger_gain: the two contexts
    smaller: dict[str, Any] = Field(default_factory=dict)
    axis: str = ""  # falls_after: LAYER.KEY, e.g. backbone.embedding_size
    at: Any = None
    select: dict[str, Any] = Field(default_factory=dict)  # falls_after: the runs on the curve


class ClaimsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = 0.05
    claims: list[Claim]


def load_claims(path: str | Path | None = None) -> ClaimsFile:
    text = Path(path).read_text() if path else (resources.files("bench.report") / "claims.yaml").read_text()
    try:
        return ClaimsFile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise BenchError(f"{path or 'bench/report/claims.yaml'}: invalid claims file: {exc}") from exc


NAN = float("nan")
VERDICTS = ("holds", "reversed", "inconclusive", "not run")


@dataclass
class Comparison:
    """One directional test inside a claim: `hi` is claimed above `lo`. Effect, interval and p come from the
    same test (`test`)."""

    label: str
    effect: float  # relative gain of hi over lo (larger_gain: difference of relative gains)
    dz: float
    p: float  # the primary test's p (two-level bootstrap; Welch t for a record-level metric), raw
    direction_ok: bool  # the effect goes the claimed way
    runs: list[str]
    seeds: int  # the fewer of the two sides' seeds
    p_corr: float = NAN
    ci: tuple[float, float] = (NAN, NAN)  # of `effect`, from the same test as `p`
    users: int = 0  # 0: seed-level test (no per-user values)
    nonzero: int = 0
    mde: float = NAN  # the effect the test detects at 80% power (relative; larger_gain: in gain difference)
    wilcoxon_p: float = NAN  # secondary, raw: user-level (larger_gain without shared users: Mann-Whitney)
    ttest_p: float = NAN  # secondary, raw: Welch t over seed means
    seeds_text: str = ""  # seeds per side, "3" or "5 / 3"
    seeds_needed: str = "—"
    test: str = ""
    collapsed: list[str] = field(default_factory=list)  # collapsed seeds of its sides (convergence.run_line)

    def verdict(self, alpha: float) -> str:
        if not self.p_corr < alpha:
            return "inconclusive"
        return "holds" if self.direction_ok else "reversed"


@dataclass
class Result:
    claim: Claim
    comparisons: list[Comparison] = field(default_factory=list)
    missing: str = ""
    context: str = ""
    correction: str = "holm"
    family: int = 0  # comparisons in the correction's family (every comparison of the claims file)

    def status(self, alpha: float) -> tuple[str, str]:
        """(verdict, why): holds / reversed / inconclusive / not run."""
        from bench.report.stats import family_short

        if self.missing or not self.comparisons:
            return "not run", self.missing or "no runs"
        verdicts = [c.verdict(alpha) for c in self.comparisons]
        head = family_short(self.correction, self.family)
        if "reversed" in verdicts:
            return "reversed", "significantly reversed: " + "; ".join(
                f"{c.label} ({format_gain(c.effect)}, {head} {format_p(c.p_corr)})"
                for c, v in zip(self.comparisons, verdicts) if v == "reversed")
        weak = [c for c, v in zip(self.comparisons, verdicts) if v == "inconclusive"]
        if weak:
            return "inconclusive", f"not significant ({head} >= {alpha}): " + "; ".join(
                f"{c.label}: observed {format_gain(c.effect)}, detectable ±{100 * c.mde:.1f}%"
                if c.mde == c.mde else f"{c.label}: observed {format_gain(c.effect)}" for c in weak)
        return "holds", ""


def _pick(pairings: list[Pairing]) -> Pairing | None:
    return pairings[0] if pairings else None


def _collapsed(store: ResultStore, *sides: list[RunSpec]) -> list[str]:
    """The collapsed seeds (bench.report.convergence) of each side of a comparison, one line each."""
    from bench.report.convergence import run_line, side_collapsed

    return [run_line(run) for side in sides for _, run in side_collapsed(store, side).iterrows()]


def _directional(store: ResultStore, hi: list[RunSpec], lo: list[RunSpec], metric: str, label: str) -> Comparison:
    result = compare(store, hi, lo, metric)
    return Comparison(label, result.get("relative", NAN), result.get("effect_dz", NAN), float(decisive_p(result)),
                      result.get("diff", 0) > 0, [s.run_id for s in hi + lo], result["n_seeds"],
                      ci=(result.get("ci_low", NAN), result.get("ci_high", NAN)),
                      users=result.get("n_users", 0), nonzero=result.get("n_nonzero", 0),
                      mde=result.get("mde", NAN), wilcoxon_p=result.get("wilcoxon_p", NAN),
                      ttest_p=result.get("ttest_p", NAN), seeds_text=format_seeds(result),
                      seeds_needed=format_seeds_needed(result), test=TEST_NAMES.get(result.get("unit"), ""),
                      collapsed=_collapsed(store, hi, lo))


def _name(selector: dict[str, Any]) -> str:
    return ",".join(f"{v}" if k == "method" else f"{k}={v}" for k, v in selector.items())


def _better(store, specs, claim: Claim, hi: dict, lo: dict) -> tuple[Comparison | None, str]:
    pairing = _pick(pair(specs, claim.where, hi, lo))
    if pairing is None:
        return None, f"no stored runs of both {_name(hi)} and {_name(lo)}"
    # every stored seed of each side: seeds are resampled per side, never paired
    return (_directional(store, pairing.runs_a, pairing.runs_b, claim.metric, f"{_name(hi)} > {_name(lo)}"),
            pairing.context)


def _relative_per_user(store, pairing: Pairing, metric: str) -> pd.Series:
    """Per user: (a - b) / mean(b) of the user's seed means (stats.paired_users); its mean is the
    relative gain."""
    users = paired_users(store, pairing.runs_a, pairing.runs_b, metric)
    if users.empty:
        return pd.Series(dtype=float)
    return ((users["a"] - users["b"]) / users["b"].mean()).round(12)


def gain_difference(big: tuple[np.ndarray, np.ndarray], small: tuple[np.ndarray, np.ndarray], paired: bool,
                    seed: int = SEED, n_resamples: int = N_BOOTSTRAP) -> dict:
    """The two-level bootstrap of (mean A / mean B - 1 in `big`) - (the same in `small`), from each context's
    [users, seeds] matrices of A and B: per resample, every side's seeds drawn with replacement
    independently, then the users once per context, or once for both (`paired`: the same users, same
    order, in both contexts). Returns the 95% percentile interval (ci_low, ci_high), the two-sided `p` of no
    difference (`stats.bootstrap_p`) and the effect detectable at 80% power, z x the bootstrap standard
    deviation (`mde`)."""
    from bench.report.stats import _count_weights, _z_power, bootstrap_p

    rng = np.random.default_rng(seed)
    mats = [np.asarray(m, float) for m in (*big, *small)]
    seeds = [_count_weights(rng, m.shape[1], n_resamples) for m in mats]
    users_big = _count_weights(rng, mats[0].shape[0], n_resamples) / mats[0].shape[0]
    users_small = users_big if paired else _count_weights(rng, mats[2].shape[0], n_resamples) / mats[2].shape[0]
    means = [((users @ m) * w).sum(axis=1) / m.shape[1]
             for users, m, w in zip((users_big, users_big, users_small, users_small), mats, seeds)]
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = (means[0] / means[1] - 1) - (means[2] / means[3] - 1)
    diff = diff[np.isfinite(diff)]
    low, high = np.percentile(diff, [2.5, 97.5])
    return {"ci_low": float(low), "ci_high": float(high), "p": bootstrap_p(diff),
            "mde": float(_z_power() * np.std(diff, ddof=1))}


def _larger_gain(store, specs, claim: Claim) -> Result:
    from bench.report.stats import side_matrices

    result = Result(claim)
    chosen = []
    for side in (claim.larger, claim.smaller):
        pairing = _pick(pair(specs, {**claim.where, **side}, claim.a, claim.b))
        if pairing is None:
            result.missing = f"no stored runs of {_name(claim.a)} and {_name(claim.b)} with {_name(side)}"
            return result
        chosen.append(pairing)
    gains = [compare(store, p.runs_a, p.runs_b, claim.metric) for p in chosen]
    sides = [side_matrices(store, p.runs_a, p.runs_b, claim.metric) for p in chosen]
    effect = gains[0].get("relative", np.nan) - gains[1].get("relative", np.nan)
    runs = [s.run_id for p_ in chosen for s in p_.runs_a + p_.runs_b]
    label = (f"gain {_name(claim.a)} over {_name(claim.b)}: {_name(claim.larger)} "
             f"({100 * gains[0].get('relative', np.nan):+.1f}%) > {_name(claim.smaller)} "
             f"({100 * gains[1].get('relative', np.nan):+.1f}%)")
    collapsed = _collapsed(store, *(side for c in chosen for side in (c.runs_a, c.runs_b)))
    seeds = min(min(g.get("n_seeds_a", 0), g.get("n_seeds_b", 0)) for g in gains)
    result.context = " vs ".join(c.context for c in chosen)
    if any(s is None or s[0].empty for s in sides):  # a record-level metric: no two-level test of gains
        result.comparisons.append(Comparison(label, effect, np.nan, np.nan, bool(effect > 0), runs, seeds,
                                             collapsed=collapsed, test="none (no per-user values)"))
        return result
    big, small = (_relative_per_user(store, p, claim.metric) for p in chosen)
    common = big.index.intersection(small.index)
    paired = len(common) >= 10  # the same test users (e.g. half_history keeps temporal_loo's test items)
    if paired:
        sides = [(a.loc[common], b.loc[common]) for a, b in sides]
        x, y = big[common].to_numpy(), small[common].to_numpy()
        diff = x - y
        user_p = wilcoxon_p(x, y)
        dz = float(diff.mean() / diff.std(ddof=1)) if diff.std(ddof=1) > 0 else np.nan
        users, nonzero = len(diff), int((np.round(diff, 12) != 0).sum())
    else:  # different users: unpaired
        user_p = float(sps.mannwhitneyu(big, small).pvalue)
        pooled = np.sqrt((big.var(ddof=1) + small.var(ddof=1)) / 2)
        dz = float((big.mean() - small.mean()) / pooled) if pooled > 0 else np.nan
        users, nonzero = min(len(big), len(small)), 0
    boot = gain_difference(*(tuple(m.to_numpy(float) for m in s) for s in sides), paired=paired)
    test = ("two-level bootstrap of the gain difference, "
            + ("one user draw for both contexts" if paired else "a user draw per context"))
    result.comparisons.append(Comparison(label, effect, dz, boot["p"], bool(effect > 0), runs, seeds,
                                         ci=(boot["ci_low"], boot["ci_high"]), users=users, nonzero=nonzero,
                                         mde=boot["mde"], wilcoxon_p=user_p, seeds_text=str(seeds), test=test,
                                         collapsed=collapsed))
    return result


def _falls_after(store, specs, claim: Claim) -> Result:
    result = Result(claim)
    from bench.selection import field_value, matches

    pool = [s for s in specs if matches(s, {**claim.where, **claim.select})]
    values = sorted({v for s in pool if (v := field_value(s, claim.axis)) is not None}, key=float)
    above = [v for v in values if float(v) > float(claim.at)]
    for value in above:
        comparison, context = _better(store, specs, claim, {**claim.select, claim.axis: claim.at},
                                      {**claim.select, claim.axis: value})
        if comparison is None:
            continue
        comparison.label = f"{claim.axis}={claim.at} > {claim.axis}={value}"
        result.comparisons.append(comparison)
        result.context = context
    if not result.comparisons:
        result.missing = f"no stored runs of {_name(claim.select)} at {claim.axis}={claim.at} and above"
    return result


def evaluate_claim(store: ResultStore, specs: list[RunSpec], claim: Claim) -> Result:
    if claim.kind == "larger_gain":
        return _larger_gain(store, specs, claim)
    if claim.kind == "falls_after":
        return _falls_after(store, specs, claim)
    steps = [(claim.a, claim.b)] if claim.kind == "better" else list(zip(claim.chain, claim.chain[1:]))
    result = Result(claim)
    contexts = []
    for hi, lo in steps:
        comparison, context = _better(store, specs, claim, hi, lo)
        if comparison is None:
            result.missing = context
            result.comparisons = []
            return result
        result.comparisons.append(comparison)
        contexts.append(context)
    result.context = " | ".join(dict.fromkeys(contexts))
    return result


def check_claims(store: ResultStore, claims: ClaimsFile, correction: str = "holm") -> list[Result]:
    """Evaluate every claim on the stored runs; the primary p corrected over one family: every comparison of
    the file (its size kept on each result)."""
    specs = stored_specs(store)
    results = [evaluate_claim(store, specs, claim) for claim in claims.claims]
    comparisons = [c for r in results for c in r.comparisons]
    for c, q in zip(comparisons, correct([c.p for c in comparisons], correction)):
        c.p_corr = q
    for r in results:
        r.correction, r.family = correction, len(comparisons)
    return results


def _fmt(value: float, spec: str) -> str:
    return "—" if value is None or value != value else format(value, spec)


def _users(c: Comparison) -> str:
    return f"{c.users} ({c.nonzero})" if c.users else "— (seed-level)"


def claims_summary(results: list[Result], alpha: float) -> pd.DataFrame:
    """One row per claim: its verdict and what its parts say (counts of holds / reversed / inconclusive)."""
    rows = []
    for r in results:
        status, why = r.status(alpha)
        verdicts = [c.verdict(alpha) for c in r.comparisons]
        parts = ", ".join(f"{verdicts.count(v)} {v}" for v in VERDICTS[:3] if v in verdicts) or "—"
        rows.append({"Claim": r.claim.id, "Statement": r.claim.text, "Paper": r.claim.paper, "Verdict": status,
                     "Parts": f"{len(verdicts)}: {parts}" if verdicts else "—", "Why": why or "—"})
    return pd.DataFrame(rows)


def claims_table(results: list[Result], alpha: float) -> pd.DataFrame:
    """One row per comparison (a claim of several parts has a row per part; a claim not run one row): the
    part's verdict, its effect with the 95% interval of the same test, that test's p raw and corrected over
    the family (`p (corr.)`), the effect it could detect at 80% power, the secondary p (user-level Wilcoxon,
    Welch t over seeds; raw), users, seeds a side, the seeds the observed variance calls for; ◊ on the effect
    where the comparison rests on a collapsed seed (bench.report.convergence)."""
    from bench.report.convergence import COLLAPSE_MARK

    rows = []
    for r in results:
        status, _ = r.status(alpha)
        base = {"Claim": r.claim.id, "Claim verdict": status}
        if not r.comparisons:
            rows.append({**base, "Part": "—", "Verdict": status, "Effect (rel.) [95% CI]": "—", "p": "—",
                         "p (corr.)": "—", "Detectable ±%": "—", "Wilcoxon p (users)": "—", "t p (seeds)": "—",
                         "d_z": "—", "Users (≠ 0)": "—", "Seeds": "0", "Seeds needed": "—", "Runs": 0,
                         "Context": r.context or "—"})
            continue
        for c in r.comparisons:
            rows.append({**base, "Part": c.label, "Verdict": c.verdict(alpha),
                         "Effect (rel.) [95% CI]": format_gain(c.effect, *c.ci) + (
                             f" {COLLAPSE_MARK}" if c.collapsed else ""),
                         "p": format_p(c.p), "p (corr.)": format_p(c.p_corr),
                         "Detectable ±%": _fmt(100 * c.mde, ".1f"), "Wilcoxon p (users)": format_p(c.wilcoxon_p),
                         "t p (seeds)": format_p(c.ttest_p), "d_z": _fmt(c.dz, ".2f"), "Users (≠ 0)": _users(c),
                         "Seeds": c.seeds_text or str(c.seeds), "Seeds needed": c.seeds_needed,
                         "Runs": len(c.runs), "Context": r.context or "—"})
    return pd.DataFrame(rows)


def _detail(c: Comparison, alpha: float, head: str) -> str:
    from bench.report.convergence import COLLAPSE_MARK

    mde = f", detectable ±{100 * c.mde:.1f}%" if c.mde == c.mde else ""
    return (f"  - {c.label}: {c.verdict(alpha)}; {format_gain(c.effect, *c.ci)} ({c.test or 'no test'}), "
            f"p {format_p(c.p)}, {head} {format_p(c.p_corr)}{mde}; secondary, raw: Wilcoxon p (users) "
            f"{format_p(c.wilcoxon_p)}, Welch t p (seeds) {format_p(c.ttest_p)}; d_z {_fmt(c.dz, '.2f')}, users "
            f"{_users(c)}, seeds {c.seeds_text or c.seeds}"
            + (f" (seeds needed: {c.seeds_needed})" if c.seeds_needed != "—" else "")
            + f", runs {', '.join(c.runs)}"
            + "".join(f"\n    - {COLLAPSE_MARK} collapsed seed: {line}" for line in c.collapsed))


def render_claims(results: list[Result], claims: ClaimsFile, correction: str, store: ResultStore) -> str:
    """The claims report (Markdown): the verdict per claim, the parts table (one row per comparison), how it
    was tested and its family, one detail block per claim."""
    from bench.report.stats import family_short, family_text, seeds_note

    size = sum(len(r.comparisons) for r in results)
    head = family_short(correction, size)
    summary = claims_summary(results, claims.alpha)
    parts = claims_table(results, claims.alpha).drop(columns=["Claim verdict", "Context"]).rename(
        columns={"p (corr.)": head})
    lines = [summary.drop(columns=["Why"]).to_markdown(index=False, disable_numparse=True), "",
             "Parts (one row per comparison; effect, interval and p from the same test):", "",
             parts.to_markdown(index=False, disable_numparse=True), "",
             f"Checked on the {len(stored_specs(store))} run records under {store.root}/runs. Family: "
             f"{family_text(correction, size, 'claims.md')}; {head}: the primary p corrected over it. Primary test "
             "(effect, 95% CI, p): the paired two-level bootstrap (each side's seeds resampled independently, "
             "then the test users once for both sides; AUC of pointwise runs on the same test pairs: each drawn "
             "run's exact AUC on the drawn users' pairs; larger_gain: the difference of the two relative gains, "
             "one user draw for both contexts where they share their test users); Welch's t over seeds where a "
             f"metric has no per-user values. Verdicts: holds (claimed direction, {head} < {claims.alpha}), "
             f"reversed (the other direction, {head} < {claims.alpha}), inconclusive ({head} >= {claims.alpha}: "
             "Detectable is the effect the test detects at 80% power, two-sided α = 0.05), not run (runs "
             "missing); a claim holds when every part holds and is reversed when any part is. Secondary, raw: "
             "Wilcoxon signed-rank over users of the seed-averaged values (exact, Pratt's zero rule; larger_gain "
             "without shared users: Mann–Whitney), Welch's t over the seed means. d_z: mean / sd of the per-user "
             "differences; Users: users tested (with a non-zero difference).", "", seeds_note(), "",
             "Details:"]
    if any(c.collapsed for r in results for c in r.comparisons):
        from bench.report.convergence import COLLAPSE_MARK, rule_text

        lines[-2:-1] = ["", f"{COLLAPSE_MARK} (on the effect): a comparison rests on a collapsed seed, a run where "
                        f"{rule_text(['ndcg@10 (ranking)', 'auc (pointwise)'])}; each is named under its claim "
                        "below.", ""]
    for r in results:
        status, why = r.status(claims.alpha)
        lines.append(f"- `{r.claim.id}` ({status}){': ' + why if why else ''}. Context: {r.context or '—'}.")
        lines += [_detail(c, claims.alpha, head) for c in r.comparisons]
    return "\n".join(lines) + "\n"
