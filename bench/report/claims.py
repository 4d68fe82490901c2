"""The papers' directional findings as checks over whatever runs the result store holds.

A claims file (bench/report/claims.yaml) lists claims of four kinds, each over runs selected by spec fields
(see bench/selection.py), never by suite membership:
- `better`: A > B on `metric` (inside one context: same data, split, backbone settings);
- `order`: a chain, each entry > the next;
- `larger_gain`: the relative gain of A over B is larger in context `larger` than in `smaller`;
- `falls_after`: with `axis` (a LAYER.KEY setting) above `at`, the metric is lower than at `at`.

A claim *holds* when every comparison goes the claimed way and its corrected p < alpha; it *fails*
otherwise (reversed, or not significant); it is *not run* when the runs are missing. The verdict's
p is the Wilcoxon signed-rank test over users (each user's metric averaged over the seeds first;
bench/report/stats.py) where per-user values exist, else the paired t over seeds; the user-level
sign-flip permutation p and the 95% user-bootstrap interval of the effect are reported beside it.
Every comparison of the file is one family for the correction (Holm by default).
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
    bootstrap_interval,
    compare,
    correct,
    decisive_p,
    format_gain,
    format_p,
    paired_users,
    sign_flip_p,
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


@dataclass
class Comparison:
    """One directional test inside a claim: `hi` is claimed above `lo`."""

    label: str
    effect: float  # relative gain of hi over lo (larger_gain: difference of relative gains)
    dz: float
    p: float  # the verdict's p: user-level Wilcoxon, or seed-level t for a record-level metric
    direction_ok: bool
    runs: list[str]
    seeds: int
    p_corr: float = float("nan")
    signflip_p: float = float("nan")
    signflip_corr: float = float("nan")
    ci: tuple[float, float] = (float("nan"), float("nan"))
    users: int = 0  # 0: seed-level test (no per-user values)
    nonzero: int = 0
    mde: float = float("nan")
    collapsed: list[str] = field(default_factory=list)  # collapsed seeds of its sides (convergence.run_line)


@dataclass
class Result:
    claim: Claim
    comparisons: list[Comparison] = field(default_factory=list)
    missing: str = ""
    context: str = ""

    def status(self, alpha: float) -> tuple[str, str]:
        if self.missing or not self.comparisons:
            return "not run", self.missing or "no runs"
        reversed_ = [c.label for c in self.comparisons if not c.direction_ok]
        if reversed_:
            return "fails", "reversed: " + "; ".join(reversed_)
        weak = [c.label for c in self.comparisons if not c.p_corr < alpha]
        if weak:
            return "fails", f"claimed direction, not significant (corrected p >= {alpha}): " + "; ".join(weak)
        return "holds", ""


def _pick(pairings: list[Pairing]) -> Pairing | None:
    return pairings[0] if pairings else None


def _collapsed(store: ResultStore, *sides: list[RunSpec]) -> list[str]:
    """The collapsed seeds (bench.report.convergence) of each side of a comparison, one line each."""
    from bench.report.convergence import run_line, side_collapsed

    return [run_line(run) for side in sides for _, run in side_collapsed(store, side).iterrows()]


def _directional(store: ResultStore, hi: list[RunSpec], lo: list[RunSpec], metric: str, label: str) -> Comparison:
    result = compare(store, hi, lo, metric)
    nan = float("nan")
    return Comparison(label, result.get("relative", nan), result.get("effect_dz", nan), float(decisive_p(result)),
                      result.get("diff", 0) > 0, [s.run_id for s in hi + lo], result["n_seeds"],
                      signflip_p=result.get("signflip_p", nan), ci=(result.get("ci_low", nan),
                                                                    result.get("ci_high", nan)),
                      users=result.get("n_users", 0), nonzero=result.get("n_nonzero", 0),
                      mde=result.get("mde", nan), collapsed=_collapsed(store, hi, lo))


def _name(selector: dict[str, Any]) -> str:
    return ",".join(f"{v}" if k == "method" else f"{k}={v}" for k, v in selector.items())


def _better(store, specs, claim: Claim, hi: dict, lo: dict) -> tuple[Comparison | None, str]:
    pairing = _pick(pair(specs, claim.where, hi, lo))
    if pairing is None:
        return None, f"no stored runs of both {_name(hi)} and {_name(lo)}"
    hi_runs = [s for s in pairing.runs_a if s.seed in pairing.seeds]
    lo_runs = [s for s in pairing.runs_b if s.seed in pairing.seeds]
    return _directional(store, hi_runs, lo_runs, claim.metric, f"{_name(hi)} > {_name(lo)}"), pairing.context


def _relative_per_user(store, pairing: Pairing, metric: str) -> pd.Series:
    """Per user: (a - b) / mean(b) of the user's seed means (stats.paired_users); its mean is the
    relative gain."""
    runs_a = [s for s in pairing.runs_a if s.seed in pairing.seeds]
    runs_b = [s for s in pairing.runs_b if s.seed in pairing.seeds]
    users = paired_users(store, runs_a, runs_b, metric)
    if users.empty:
        return pd.Series(dtype=float)
    return ((users["a"] - users["b"]) / users["b"].mean()).round(12)


def _larger_gain(store, specs, claim: Claim) -> Result:
    result = Result(claim)
    chosen = []
    for side in (claim.larger, claim.smaller):
        pairing = _pick(pair(specs, {**claim.where, **side}, claim.a, claim.b))
        if pairing is None:
            result.missing = f"no stored runs of {_name(claim.a)} and {_name(claim.b)} with {_name(side)}"
            return result
        chosen.append(pairing)
    big, small = (_relative_per_user(store, p, claim.metric) for p in chosen)
    gains = [compare(store, [s for s in p.runs_a if s.seed in p.seeds], [s for s in p.runs_b if s.seed in p.seeds],
                     claim.metric) for p in chosen]
    effect = gains[0].get("relative", np.nan) - gains[1].get("relative", np.nan)
    common = big.index.intersection(small.index)
    extra: dict[str, Any] = {}
    if len(common) >= 10:  # the same test users (e.g. half_history keeps temporal_loo's test items)
        x, y = big[common].to_numpy(), small[common].to_numpy()
        diff = x - y
        p = wilcoxon_p(x, y)
        dz = float(diff.mean() / diff.std(ddof=1)) if diff.std(ddof=1) > 0 else np.nan
        extra = {"signflip_p": sign_flip_p(diff), "users": len(diff), "nonzero": int((diff != 0).sum()),
                 "ci": bootstrap_interval((x, y), lambda a, b, axis=-1: np.mean(a - b, axis=axis))}
    elif len(big) and len(small):  # different users: unpaired
        p = float(sps.mannwhitneyu(big, small).pvalue)
        pooled = np.sqrt((big.var(ddof=1) + small.var(ddof=1)) / 2)
        dz = float((big.mean() - small.mean()) / pooled) if pooled > 0 else np.nan
    else:
        p, dz = np.nan, np.nan
    runs = [s.run_id for p_ in chosen for s in p_.runs_a + p_.runs_b]
    label = (f"gain {_name(claim.a)} over {_name(claim.b)}: {_name(claim.larger)} "
             f"({100 * gains[0].get('relative', np.nan):+.1f}%) > {_name(claim.smaller)} "
             f"({100 * gains[1].get('relative', np.nan):+.1f}%)")
    collapsed = _collapsed(store, *([s for s in side if s.seed in c.seeds] for c in chosen
                                    for side in (c.runs_a, c.runs_b)))
    result.comparisons.append(Comparison(label, effect, dz, p, bool(effect > 0), runs,
                                         min(len(c.seeds) for c in chosen), collapsed=collapsed, **extra))
    result.context = " vs ".join(c.context for c in chosen)
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
    """Evaluate every claim on the stored runs; p-values corrected over all comparisons of the file."""
    specs = stored_specs(store)
    results = [evaluate_claim(store, specs, claim) for claim in claims.claims]
    comparisons = [c for r in results for c in r.comparisons]
    for c, p, q in zip(comparisons, correct([c.p for c in comparisons], correction),
                       correct([c.signflip_p for c in comparisons], correction)):
        c.p_corr, c.signflip_corr = p, q
    return results


def _fmt(value: float, spec: str) -> str:
    return "—" if value is None or value != value else format(value, spec)


def _users(c: Comparison) -> str:
    return f"{c.users} ({c.nonzero})" if c.users else "— (seed-level)"


def claims_table(results: list[Result], alpha: float) -> pd.DataFrame:
    """One row per claim: status, the weakest comparison's effect with its 95% user-bootstrap interval,
    the worst corrected p (user-level Wilcoxon, or seed-level t) and sign-flip p; ◊ on the effect where a
    comparison rests on a collapsed seed (bench.report.convergence)."""
    from bench.report.convergence import COLLAPSE_MARK

    rows = []
    for r in results:
        status, why = r.status(alpha)
        worst = max(r.comparisons, key=lambda c: (c.p_corr if c.p_corr == c.p_corr else 2)) if r.comparisons else None
        weakest = min(r.comparisons, key=lambda c: c.effect if c.effect == c.effect else np.inf) if r.comparisons else None
        rows.append({
            "Claim": r.claim.id, "Statement": r.claim.text, "Paper": r.claim.paper, "Status": status,
            "Effect (rel.) [95% CI]": (format_gain(weakest.effect, *weakest.ci) + (
                f" {COLLAPSE_MARK}" if any(c.collapsed for c in r.comparisons) else "")) if weakest else "—",
            "d_z": _fmt(weakest.dz, ".2f") if weakest else "—",
            "p (corr.)": format_p(worst.p_corr) if worst else "—",
            "Sign-flip p (corr.)": format_p(worst.signflip_corr) if worst else "—",
            "Users (≠ 0)": _users(weakest) if weakest else "—",
            "Seeds": min(c.seeds for c in r.comparisons) if r.comparisons else 0,
            "Runs": sum(len(c.runs) for c in r.comparisons),
            "Context": r.context or "—", "Why": why or "—"})
    return pd.DataFrame(rows)


def _detail(c: Comparison) -> str:
    from bench.report.convergence import COLLAPSE_MARK

    mde = f", MDE ±{100 * c.mde:.1f}%" if c.mde == c.mde else ""
    return (f"  - {c.label}: {format_gain(c.effect, *c.ci)}, d_z {_fmt(c.dz, '.2f')}, p {format_p(c.p)} "
            f"(corrected {format_p(c.p_corr)}), sign-flip p {format_p(c.signflip_p)} (corrected "
            f"{format_p(c.signflip_corr)}), users {_users(c)}{mde}, {c.seeds} seeds, runs {', '.join(c.runs)}"
            + "".join(f"\n    - {COLLAPSE_MARK} collapsed seed: {line}" for line in c.collapsed))


def render_claims(results: list[Result], claims: ClaimsFile, correction: str, store: ResultStore) -> str:
    """The claims report (Markdown): the table, how it was tested, one detail block per claim."""
    table = claims_table(results, claims.alpha)
    lines = [table.drop(columns=["Context", "Why"]).to_markdown(index=False, disable_numparse=True), "",
             f"Checked on the {len(stored_specs(store))} run records under {store.root}/runs. Users are the unit: "
             f"each user's metric is averaged over the seeds first (users present in every run of both sides). "
             f"p: Wilcoxon signed-rank test over users where per-user values exist; AUC of pointwise runs on "
             f"the same test pairs: paired bootstrap over users (each with all its pairs); else paired t over "
             f"the seeds (seed-level); sign-flip: paired permutation test over users (seeded); both "
             f"{correction}-corrected over all {sum(len(r.comparisons) for r in results)} comparisons; a claim "
             f"holds when every comparison goes the claimed way with corrected p < {claims.alpha}. Effect: "
             "relative gain of the claimed-better side (weakest comparison) with its 95% user-bootstrap "
             "interval; d_z: mean / sd of the per-user differences; Users: users tested (with a non-zero "
             "difference); MDE: minimum detectable relative effect at 80% power (two-sided α = 0.05).", "",
             "Details:"]
    if any(c.collapsed for r in results for c in r.comparisons):
        from bench.report.convergence import COLLAPSE_MARK, rule_text

        lines[-2:-1] = ["", f"{COLLAPSE_MARK} (on the effect): a comparison rests on a collapsed seed, a run where "
                        f"{rule_text(['ndcg@10 (ranking)', 'auc (pointwise)'])}; each is named under its claim "
                        "below.", ""]
    for r in results:
        status, why = r.status(claims.alpha)
        lines.append(f"- `{r.claim.id}` ({status}){': ' + why if why else ''}. Context: {r.context or '—'}.")
        lines += [_detail(c) for c in r.comparisons]
    return "\n".join(lines) + "\n"
