"""`bench compare A B`: two methods (or two run ids) side by side on stored runs, per context.

A and B are run ids (or unique prefixes of stored ones), or selectors: a method name, or
`method=llminit-var,encoder=mpnet` (any spec field or LAYER.KEY setting). `--where` / `--suite` /
`--dataset` / `--split` / `--backbone` narrow the runs; every context (same data, split and backbone
settings) holding both A and B gets one block: means ± std over seeds, delta, relative delta,
Cohen's d_z, per-user paired Wilcoxon p and paired t p over seeds, corrected over all rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.errors import BenchError
from bench.records import ResultStore
from bench.selection import pair, parse_selector, variant_label
from bench.spec import RunSpec
from bench.stats import compare, correct

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

    return {"Metric": metric, "A": cell(result["mean_a"], result.get("std_a", np.nan)),
            "B": cell(result["mean_b"], result.get("std_b", np.nan)), "Δ (A−B)": result["diff"],
            "Δ %": 100 * result["relative"], "d_z": result.get("effect_dz", np.nan),
            "Wilcoxon p": result["wilcoxon_p"], "t p (seeds)": result["ttest_p"],
            "Users x seeds": result.get("n_pairs", 0), "Seeds": result["n_seeds"]}


def _two_runs(store: ResultStore, id_a: str, id_b: str, metric: str) -> dict:
    a, b = store.per_user(id_a), store.per_user(id_b)
    if metric not in a.columns or metric not in b.columns:
        va = store.load(id_a)["metrics"]["overall"].get(metric)
        vb = store.load(id_b)["metrics"]["overall"].get(metric)
        if va is None or vb is None:
            return {"n_seeds": 0}
        return {"mean_a": va, "mean_b": vb, "diff": va - vb, "relative": va / vb - 1 if vb else np.nan,
                "wilcoxon_p": np.nan, "ttest_p": np.nan, "n_pairs": 0, "n_seeds": 1}
    merged = a[["user", metric]].merge(b[["user", metric]], on="user", suffixes=("_a", "_b")).dropna()
    diff = merged[f"{metric}_a"] - merged[f"{metric}_b"]
    p = float(sps.wilcoxon(merged[f"{metric}_a"], merged[f"{metric}_b"]).pvalue) if (diff != 0).any() else 1.0
    sd = diff.std(ddof=1)
    ma, mb = float(merged[f"{metric}_a"].mean()), float(merged[f"{metric}_b"].mean())
    return {"mean_a": ma, "mean_b": mb, "diff": ma - mb, "relative": ma / mb - 1 if mb else np.nan,
            "effect_dz": float(diff.mean() / sd) if sd > 0 else np.nan, "wilcoxon_p": p, "ttest_p": np.nan,
            "n_pairs": int(len(merged)), "n_seeds": 1}


def compare_report(store: ResultStore, specs: list[RunSpec], a: str, b: str, where: dict[str, Any],
                   metrics=DEFAULT_METRICS, correction: str = "holm") -> str:
    """The comparison as Markdown: one block per context, p-values corrected over every row."""
    id_a, id_b = resolve_run_id(store, a), resolve_run_id(store, b)
    blocks: list[tuple[str, pd.DataFrame]] = []
    if id_a and id_b:
        spec_a = RunSpec.model_validate(store.load(id_a)["spec"])
        spec_b = RunSpec.model_validate(store.load(id_b)["spec"])
        rows = [_row(r, m) for m in metrics if (r := _two_runs(store, id_a, id_b, m)).get("n_seeds")]
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
    w_corr = iter(correct(all_rows["Wilcoxon p"].tolist(), correction))
    t_corr = iter(correct(all_rows["t p (seeds)"].tolist(), correction))
    out = []
    for title, table in blocks:
        if table.empty:
            continue
        table = table.copy()
        table.insert(table.columns.get_loc("t p (seeds)"), "Wilcoxon p (corr.)", [next(w_corr) for _ in table.index])
        table.insert(table.columns.get_loc("Users x seeds"), "t p (corr.)", [next(t_corr) for _ in table.index])
        for column in table.columns:
            if table[column].dtype.kind == "f":
                table[column] = table[column].map(lambda v: "—" if v != v else f"{v:.4g}")
        out.append(f"### {title}\n\n{table.to_markdown(index=False)}")
    out.append(f"Wilcoxon: per-user paired signed-rank test (users x seeds); t: paired over seeds; "
               f"d_z: mean / sd of the paired per-user differences; p corrected ({correction}) over all "
               f"{len(all_rows)} rows.")
    return "\n\n".join(out) + "\n"
