"""`bench compare A B`: two methods (or two run ids) side by side on stored runs, per context.

A and B are run ids (or unique prefixes of stored ones), or selectors: a method name, or
`method=llminit-var,encoder=mpnet` (any spec field or LAYER.KEY setting). `--where` / `--suite` /
`--dataset` / `--split` / `--backbone` narrow the runs; every context (same data, split and backbone
settings) holding both A and B gets one block, one row per metric, every stored seed of each side: means ±
std over seeds, delta, relative delta with its 95% two-level bootstrap interval (each side's seeds, then the
users, resampled; bench/report/stats.py) and its p, raw and corrected over the family of this call (every
row of every block, named under the report), the secondary p (exact user-level Wilcoxon, Welch t over seed
means; raw), Cohen's d_z, the primary test's minimum detectable effect and the seeds the observed variance
calls for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.records import ResultStore
from bench.report.stats import (
    BETTER_MARK,
    WORSE_MARK,
    compare,
    correct,
    decisive_p,
    direction,
    family_short,
    family_text,
    format_gain,
    format_p,
    format_seeds,
    format_seeds_needed,
    mark,
    method_note,
    seeds_note,
)
from bench.selection import pair, parse_selector, variant_label
from bench.spec import RunSpec

DEFAULT_METRICS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20")


def resolve_run_id(store: ResultStore, text: str) -> str | None:
    """A stored run id from itself or a unique prefix (>= 6 hex characters); None if not one."""
    if len(text) < 6 or any(c not in "0123456789abcdef" for c in text):
        return None
    found = [p.parent.name for p in (store.root / "runs").glob(f"{text}*/record.json")]
    if len(found) > 1:
        raise BenchError(f"run id prefix {text!r} is ambiguous: {', '.join(sorted(found))}")
    return found[0] if found else None


def as_selector(text: str) -> dict[str, Any]:
    return parse_selector(text) if "=" in text else {"method": text}


def _row(result: dict, metric: str) -> dict:
    def cell(mean, std):
        return f"{mean:.4f}" if std != std else f"{mean:.4f} ± {std:.4f}"

    users = result.get("unit") in ("users", "users-bootstrap")
    mde = result.get("mde", np.nan)
    return {"Metric": metric, "A": cell(result["mean_a"], result.get("std_a", np.nan)),
            "B": cell(result["mean_b"], result.get("std_b", np.nan)), "Δ (A−B)": f"{result['diff']:+.4g}",
            "Δ % [95% CI]": format_gain(result["relative"], result["ci_low"], result["ci_high"]),
            "p": decisive_p(result), "_direction": result.get("diff", np.nan),
            "Wilcoxon p (users)": result["wilcoxon_p"], "Welch t p (seeds)": result["ttest_p"],
            "d_z": result["effect_dz"],
            "Users (≠ 0)": f"{result['n_users']} ({result['n_nonzero']})" if users else "— (seed-level)",
            "Seeds": format_seeds(result), "Seeds needed": format_seeds_needed(result),
            "MDE %": f"±{100 * mde:.1f}" if mde == mde else "—"}


SECONDARY = ("Wilcoxon p (users)", "Welch t p (seeds)")


def _format(table: pd.DataFrame, corrected: list[float], head: str) -> pd.DataFrame:
    """The primary p raw and corrected (column `head`, naming the family), the verdict, the secondary p raw,
    p as 0.030 / <0.001, d_z to 3 decimals."""
    table = table.copy()
    table.insert(table.columns.get_loc("p") + 1, head, corrected)
    verdicts = [mark(direction({"diff": d}, q)) or "—" for d, q in zip(table.pop("_direction"), corrected)]
    table.insert(table.columns.get_loc(head) + 1, "A vs B", verdicts)
    for name in ("p", head, *SECONDARY):
        table[name] = table[name].map(format_p)
    table["d_z"] = table["d_z"].map(lambda v: "—" if v != v else f"{v:.3f}")
    return table


def compare_report(store: ResultStore, specs: list[RunSpec], a: str, b: str, where: dict[str, Any],
                   metrics=DEFAULT_METRICS, correction: str = "holm") -> str:
    """The comparison as Markdown: one block per context, p-values corrected over every row."""
    id_a, id_b = resolve_run_id(store, a), resolve_run_id(store, b)
    blocks: list[tuple[str, pd.DataFrame]] = []
    if id_a and id_b:
        spec_a = RunSpec.model_validate(store.load(id_a)["spec"])
        spec_b = RunSpec.model_validate(store.load(id_b)["spec"])
        rows = [_row(r, m) for m in metrics if (r := compare(store, [spec_a], [spec_b], m)).get("n_seeds")]
        blocks.append((f"A = {id_a} ({spec_a.label}), B = {id_b} ({spec_b.label})", pd.DataFrame(rows)))
    elif id_a or id_b:
        raise BenchError("compare two run ids, or two selectors (method names / KEY=VALUE lists), not a mix")
    else:
        sel_a, sel_b = as_selector(a), as_selector(b)
        pairings = pair(specs, where, sel_a, sel_b)
        if not pairings:
            raise BenchError(f"no stored runs of both A ({a}) and B ({b}) in one context (same dataset, split "
                             f"and backbone settings){' matching ' + str(where) if where else ''}; "
                             f"`bench run` them first")
        for pairing in pairings:
            runs_a, runs_b = pairing.runs_a, pairing.runs_b  # every seed of each side (never paired by seed)
            seeds_a, seeds_b = sorted({s.seed for s in runs_a}), sorted({s.seed for s in runs_b})
            seeds = seeds_a if seeds_a == seeds_b else f"A {seeds_a}, B {seeds_b}"
            rows = [_row(r, m) for m in metrics if (r := compare(store, runs_a, runs_b, m)).get("n_seeds")]
            spec_a, spec_b = pairing.runs_a[0], pairing.runs_b[0]
            differ = [f for f in ("dataset", "split", "backbone") if getattr(spec_a, f) != getattr(spec_b, f)]
            side_a, side_b = ("".join(f" on {getattr(s, f)}" for f in differ) for s in (spec_a, spec_b))
            title = (f"{pairing.context}: A = {variant_label(spec_a)}{side_a}, "
                     f"B = {variant_label(spec_b)}{side_b}, seeds {seeds}"
                     + (f" ({pairing.other_variants} other variants with fewer seeds left out)"
                        if pairing.other_variants else ""))
            blocks.append((title, pd.DataFrame(rows)))
    all_rows = pd.concat([t for _, t in blocks if not t.empty], ignore_index=True) if blocks else pd.DataFrame()
    if all_rows.empty:
        raise BenchError(f"none of the metrics {', '.join(metrics)} is stored for both A and B")
    family = len(all_rows)
    n_blocks = len([t for _, t in blocks if not t.empty])
    what = f"this compare call (every row of its {n_blocks} block{'s' * (n_blocks > 1)})"
    head = family_short(correction, family)
    corrected = iter(correct(all_rows["p"].tolist(), correction))
    out = []
    for title, table in blocks:
        if table.empty:
            continue
        table = _format(table, [next(corrected) for _ in table.index], head)
        out.append(f"### {title}\n\n{table.to_markdown(index=False, disable_numparse=True)}")
    out.append(f"p: the primary test, raw; {head}: corrected, {family_text(correction, family, what)}. "
               f"A vs B: {BETTER_MARK} A significantly better, {WORSE_MARK} significantly worse "
               "(corrected p < 0.05), — not significant. " + method_note(correction, family, what)
               + " AUC of pointwise runs scored on the same test pairs: the same two-level bootstrap of each run's "
               "exact AUC on the resampled users' pairs; a metric without per-user values (seed-level): Welch's t "
               "over seeds only. d_z: mean / sd of the per-user differences of seed means. MDE: minimum "
               "detectable relative effect of the primary test at 80% power (two-sided α = 0.05).")
    out.append(seeds_note())
    return "\n\n".join(out) + "\n"
