"""The papers' directional findings as checks over whatever runs the result store holds.

A claims file (bench/claims.yaml) lists claims of four kinds, each over runs selected by spec fields
(see bench/selection.py), never by suite membership:
- `better`: A > B on `metric` (inside one context: same data, split, backbone settings);
- `order`: a chain, each entry > the next;
- `larger_gain`: the relative gain of A over B is larger in context `larger` than in `smaller`;
- `falls_after`: with `axis` (a LAYER.KEY setting) above `at`, the metric is lower than at `at`.

A claim *holds* when every comparison goes the claimed way and its corrected p < alpha; it *fails*
otherwise (reversed, or not significant); it is *not run* when the runs are missing. p-values are
per-user paired Wilcoxon (users x seeds) where per-user values exist, else paired t over seeds;
every comparison of the file is one family for the correction (Holm by default).
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
from bench.selection import Pairing, pair, stored_specs
from bench.spec import RunSpec
from bench.stats import compare, correct, paired_vectors


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
    text = Path(path).read_text() if path else (resources.files("bench") / "claims.yaml").read_text()
    try:
        return ClaimsFile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise BenchError(f"{path or 'bench/claims.yaml'}: invalid claims file: {exc}") from exc


@dataclass
class Comparison:
    """One directional test inside a claim: `hi` is claimed above `lo`."""

    label: str
    effect: float  # relative gain of hi over lo (larger_gain: difference of relative gains)
    dz: float
    p: float
    direction_ok: bool
    runs: list[str]
    seeds: int
    p_corr: float = float("nan")


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


def _directional(store: ResultStore, hi: list[RunSpec], lo: list[RunSpec], metric: str, label: str) -> Comparison:
    result = compare(store, hi, lo, metric)
    p = result["wilcoxon_p"] if result.get("n_pairs") else result.get("ttest_p", float("nan"))
    return Comparison(label, result.get("relative", float("nan")), result.get("effect_dz", float("nan")),
                      float(p), result.get("diff", 0) > 0, [s.run_id for s in hi + lo], result["n_seeds"])


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
    """Per user: (a - b) / mean(b), averaged over seeds; its mean is the relative gain."""
    pairs = paired_vectors(store, pairing.runs_a, pairing.runs_b, metric)
    if pairs.empty:
        return pd.Series(dtype=float)
    base = pairs.groupby("seed")["b"].mean().mean()
    pairs["r"] = (pairs["a"] - pairs["b"]) / base
    return pairs.groupby("user")["r"].mean()


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
    gains = [compare(store, p.runs_a, p.runs_b, claim.metric) for p in chosen]
    effect = gains[0].get("relative", np.nan) - gains[1].get("relative", np.nan)
    common = big.index.intersection(small.index)
    if len(common) >= 10:  # the same test users (e.g. half_history keeps temporal_loo's test items)
        diff = big[common] - small[common]
        p = float(sps.wilcoxon(big[common], small[common]).pvalue) if (diff != 0).any() else 1.0
        dz = float(diff.mean() / diff.std(ddof=1)) if diff.std(ddof=1) > 0 else np.nan
    elif len(big) and len(small):
        p = float(sps.mannwhitneyu(big, small).pvalue)
        pooled = np.sqrt((big.var(ddof=1) + small.var(ddof=1)) / 2)
        dz = float((big.mean() - small.mean()) / pooled) if pooled > 0 else np.nan
    else:
        p, dz = np.nan, np.nan
    runs = [s.run_id for p_ in chosen for s in p_.runs_a + p_.runs_b]
    label = (f"gain {_name(claim.a)} over {_name(claim.b)}: {_name(claim.larger)} "
             f"({100 * gains[0].get('relative', np.nan):+.1f}%) > {_name(claim.smaller)} "
             f"({100 * gains[1].get('relative', np.nan):+.1f}%)")
    result.comparisons.append(Comparison(label, effect, dz, p, bool(effect > 0), runs,
                                         min(len(c.seeds) for c in chosen)))
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
    for c, p in zip(comparisons, correct([c.p for c in comparisons], correction)):
        c.p_corr = p
    return results


def _fmt(value: float, spec: str) -> str:
    return "—" if value is None or value != value else format(value, spec)


def claims_table(results: list[Result], alpha: float) -> pd.DataFrame:
    rows = []
    for r in results:
        status, why = r.status(alpha)
        worst = max(r.comparisons, key=lambda c: (c.p_corr if c.p_corr == c.p_corr else 2)) if r.comparisons else None
        weakest = min(r.comparisons, key=lambda c: c.effect if c.effect == c.effect else np.inf) if r.comparisons else None
        rows.append({
            "Claim": r.claim.id, "Statement": r.claim.text, "Paper": r.claim.paper, "Status": status,
            "Effect (rel.)": _fmt(100 * weakest.effect, "+.1f") + "%" if weakest else "—",
            "d_z": _fmt(weakest.dz, ".2f") if weakest else "—",
            "p (corr.)": _fmt(worst.p_corr, ".3g") if worst else "—",
            "Seeds": min(c.seeds for c in r.comparisons) if r.comparisons else 0,
            "Runs": sum(len(c.runs) for c in r.comparisons),
            "Context": r.context or "—", "Why": why or "—"})
    return pd.DataFrame(rows)


def render_claims(results: list[Result], claims: ClaimsFile, correction: str, store: ResultStore) -> str:
    table = claims_table(results, claims.alpha)
    lines = [table.drop(columns=["Context", "Why"]).to_markdown(index=False), "",
             f"Checked on the {len(stored_specs(store))} run records under {store.root}/runs; "
             f"p: per-user paired Wilcoxon (users x seeds) where per-user values exist, else paired t over "
             f"seeds; {correction}-corrected over all {sum(len(r.comparisons) for r in results)} comparisons; "
             f"a claim holds when every comparison goes the claimed way with corrected p < {claims.alpha}. "
             "Effect: relative gain of the claimed-better side (weakest comparison); d_z: mean / sd of the "
             "paired per-user differences.", "", "Details:"]
    for r in results:
        status, why = r.status(claims.alpha)
        lines.append(f"- `{r.claim.id}` ({status}){': ' + why if why else ''}. Context: {r.context or '—'}.")
        for c in r.comparisons:
            lines.append(f"  - {c.label}: {100 * c.effect:+.2f}%, d_z {_fmt(c.dz, '.2f')}, p {_fmt(c.p, '.3g')}, "
                         f"corrected {_fmt(c.p_corr, '.3g')}, {c.seeds} seeds, runs {', '.join(c.runs)}")
    return "\n".join(lines) + "\n"
