"""`bench compare A B`: two methods (or two run ids) side by side on stored runs, per context.

A and B are run ids (or unique prefixes of stored ones), or selectors: a method name, or
`method=llminit-var,encoder=mpnet` (any spec field or LAYER.KEY setting). `--where` / `--suite` /
`--dataset` / `--split` / `--backbone` narrow the runs; every context (same data, split and backbone
settings) holding both A and B gets one block: means ± std over seeds, delta,
relative delta with its 95% user-bootstrap interval, Cohen's d_z, user-level Wilcoxon and sign-flip p
(each user's metric averaged over seeds first), paired t p over seed means, corrected over all rows,
and the minimum detectable effect (bench/report/stats.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.records import ResultStore
from bench.report.stats import compare, correct, format_gain, format_p
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
            "d_z": result["effect_dz"], "Wilcoxon p": result["wilcoxon_p"], "Sign-flip p": result["signflip_p"],
            "Bootstrap p": result.get("bootstrap_p", np.nan), "t p (seeds)": result["ttest_p"],
            "Users (≠ 0)": f"{result['n_users']} ({result['n_nonzero']})" if users else "— (seed-level)",
            "Seeds": result["n_seeds"], "MDE %": f"±{100 * mde:.1f}" if mde == mde else "—"}


# Bootstrap p: AUC of pointwise runs on shared test pairs (paired user-cluster bootstrap); shown when any row has it
P_COLUMNS = ("Wilcoxon p", "Sign-flip p", "Bootstrap p", "t p (seeds)")


def _format(table: pd.DataFrame, corrected: dict[str, list[float]]) -> pd.DataFrame:
    """p columns (raw and corrected) as 0.030 / <0.001, the rest of the floats to 3 decimals."""
    table = table.copy()
    for column in [c for c in P_COLUMNS if c in table.columns]:
        table.insert(table.columns.get_loc(column) + 1, f"{column} (corr.)", corrected[column])
        for name in (column, f"{column} (corr.)"):
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
        rows = [_row(r, m) for m in metrics
                if (r := compare(store, [spec_a], [spec_b], m, match_seeds=False)).get("n_seeds")]
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
            seeds = pairing.seeds
            runs_a = [s for s in pairing.runs_a if s.seed in seeds]
            runs_b = [s for s in pairing.runs_b if s.seed in seeds]
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
    columns = [c for c in P_COLUMNS if c != "Bootstrap p" or all_rows[c].notna().any()]
    corrected = {c: iter(correct(all_rows[c].tolist(), correction)) for c in columns}
    out = []
    for title, table in blocks:
        if table.empty:
            continue
        if "Bootstrap p" not in columns:
            table = table.drop(columns="Bootstrap p")
        table = _format(table, {c: [next(corrected[c]) for _ in table.index] for c in columns})
        out.append(f"### {title}\n\n{table.to_markdown(index=False, disable_numparse=True)}")
    out.append(f"Users are the unit: each user's metric is averaged over the seeds first (users present in every "
               f"run of both sides). Wilcoxon: signed-rank test over users; sign-flip: paired permutation test "
               f"over users (seeded); t: paired over the seed means; 95% CI: user bootstrap of the relative "
               f"gain; MDE: minimum detectable relative effect at 80% power (two-sided α = 0.05); d_z: mean / sd "
               f"of the per-user differences; AUC of pointwise runs scored on the same test pairs: paired user-cluster "
               f"bootstrap over users (Bootstrap p, and the CI); another metric without per-user values "
               f"(seed-level) has only the t-test. "
               f"p corrected ({correction}) over all {len(all_rows)} rows.")
    return "\n\n".join(out) + "\n"
