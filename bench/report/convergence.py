"""Converged, or marked: the one place that decides, from a run record, whether each trained component of
the run stopped at its cap, and which seeds of a table cell collapsed. Every table (grid, segments, ctr,
paradigms, significance, LaTeX) and the claims report take their marks from here.

‡ (`CAP_MARK`) a trained component stopped at its cap instead of early on validation (not converged: read
  the cell as a lower bound). Each method family declares its components and how its records say it
  (`Method.training_components`, built from `bench.components`; this module names no family). They are:
  - `training`: the method's main training, `fit.converged` (False: at the cap); else the backbone's
    `method_info.training.early_stopped`; else (pointwise CF models of records written before they recorded
    it: mf-ctr, lightgcn-ctr, sasrec-ctr, din) `epochs_run` (or the curve's length) >= the epoch cap, which
    is `method_settings.epochs` for a model without a backbone (`backbone: none`), else
    `backbone_settings.epochs`;
  - `CF encoder`: CoLLM's pointwise CF model, `method_info.cf.early_stopped`, else its `epochs_run` >= the
    method's `cf.epochs`;
  - `retrieval backbone`: a reranker's first stage, `method_info.rerank.retrieval.converged` (or its
    training's `early_stopped`);
  - `LLM step 1` / `LLM step 2`: a Yes/No LLM's LoRA steps, which run a fixed budget and keep the state of
    best validation AUC (`method_info.stage<k>.selection`): at the cap when, of two or more evaluations, the
    best is the last (`early_stopped` False: validation was still improving when the budget ran out); a step
    evaluated once (a budget shorter than `eval_every`) gives no evidence either way: not judged, counted
    apart (`convergence_counts`' "not judged").
  - `LLM CSFT` / `LLM MNTP` / `LLM IC`: LLM2Rec's LLM stages run with validation evaluations (`evaluations`
    > 0), judged the same way from `method_info.llm2rec.stage_outputs.<stage>.selection`.
  A component that records none of these (LLM2Rec's stages without evaluations, PtE's profile rounds) is not
  judged either.
◊ (`COLLAPSE_MARK`) a collapsed seed: a run whose main metric (NDCG@10 for ranking runs, AUC for pointwise
  ones) is below `COLLAPSE_FRACTION` x the median of its cell's seeds (same dataset, split, backbone and
  method, as the table pools them), e.g. a training stopped on an early validation plateau. Its cell's mean,
  std and every comparison with the cell include it; each such run is listed under every table showing it.

`convergence_frame` / `convergence_tables` count both per suite (`<suite>/convergence.md|csv`, written with
the suite's tables); `python -m bench.report.convergence` prints the counts of every suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench.components import Component, model_training
from bench.report.labels import (
    CAP_MARK,
    COLLAPSE,
    COLLAPSE_MARK,
    backbone_labels,
    display_label,
    escape,
    method_labels,
    method_protocol,
    metric_label,
    split_labels,
)

# a run below this fraction of its cell's median main metric is a collapsed seed
COLLAPSE_FRACTION = 0.5
# what a metric gives by chance: the fraction applies to the margin above it (AUC 0.5: a pointwise run at chance
# is collapsed against a cell median of 0.69, which half of the raw median would never say)
CHANCE = {"auc": 0.5}
# a cell whose median is within this of chance has nothing to collapse from (few-shot CF rows near AUC 0.5:
# seed noise, not a collapse)
MIN_MARGIN = {"auc": 0.05}
CELL = ("dataset", "split", "backbone", "method")
# the components whose cap-stop marks a run (every trained component that records a stopping rule)
COMPONENTS = ("training", "CF encoder", "retrieval backbone", "LLM step 1", "LLM step 2", "LLM CSFT", "LLM MNTP",
              "LLM IC")


def training_components(record: dict) -> list[Component]:
    """Every trained component of the run whose stopping the record tells, as its method family declares them
    (`Method.training_components`, built from bench.components; the run's own model for a method this harness
    does not know)."""
    from bench.catalog import METHODS

    method = (record.get("spec") or {}).get("method")
    try:
        hook = METHODS.get(method).training_components
    except Exception:  # an unknown entry (a record of a method since removed): its own model only
        hook = model_training
    return [c for c in hook(record) if c is not None and c.name in COMPONENTS]


def capped_components(record: dict) -> list[Component]:
    """The run's trained components that stopped at their cap."""
    return [c for c in training_components(record) if c.capped is True]


def unjudged_components(record: dict) -> list[Component]:
    """The run's trained components whose record cannot tell whether they converged (see the docstring)."""
    return [c for c in training_components(record) if c.capped is None]


def run_capped(record: dict) -> bool:
    """True when any trained component of the run stopped at its cap instead of early on validation (not
    converged); False when every component that records its stopping stopped early, or none records it."""
    return bool(capped_components(record))


# --- collapsed seeds --------------------------------------------------------------------------------------

def main_metric(frame: pd.DataFrame) -> str:
    """The metric a cell's collapse is judged on, by the protocol its method class declares (`protocol`
    column): AUC for pointwise runs, NDCG@10 for ranking runs."""
    return "auc" if (frame["protocol"] == "pointwise").all() else "ndcg@10"


def collapsed_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The collapsed seeds of a records' frame (`tables.collect`: its overall rows; or one row per run, as
    `paradigms.paradigms_frame`): per cell (dataset, split, backbone, method) of at least two seeds, the runs
    whose main metric is below `COLLAPSE_FRACTION` x the cell's median. Columns: run_id, the cell, seed,
    metric, value, median, seeds."""
    columns = ["run_id", *CELL, "seed", "metric", "value", "median", "seeds"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    data = frame[frame["segment"] == "overall"] if "segment" in frame.columns else frame
    data = data.drop_duplicates("run_id")
    rows = []
    for key, cell in data.groupby(list(CELL), sort=False):
        metric = main_metric(cell)
        if metric not in cell.columns:
            continue
        values = cell[metric].astype(float)
        if len(values) < 2 or values.isna().any():
            continue
        median, chance = float(values.median()), CHANCE.get(metric, 0.0)
        if median - chance <= MIN_MARGIN.get(metric, 0.0):
            continue
        for _, run in cell[values - chance < COLLAPSE_FRACTION * (median - chance)].iterrows():
            rows.append({"run_id": run["run_id"], **dict(zip(CELL, key)), "seed": int(run["seed"]),
                         "metric": metric, "value": float(run[metric]), "median": median, "seeds": len(values)})
    return pd.DataFrame(rows, columns=columns)


def mark_collapsed(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a `collapsed` column (every row of a collapsed run, all its segments)."""
    if frame.empty:
        return frame
    ids = set(collapsed_runs(frame)["run_id"])
    return frame.assign(collapsed=frame["run_id"].isin(ids))


def flagged(cell: pd.DataFrame, column: str) -> bool:
    """Whether any run of a table cell carries the flag (`capped`, `collapsed`); False without the column."""
    return column in cell.columns and bool(cell[column].fillna(False).astype(bool).any())


def cell_marks(cell: pd.DataFrame) -> str:
    """The cap-stop and collapse marks of a table cell, each after a space."""
    return (f" {CAP_MARK}" if flagged(cell, "capped") else "") + (f" {COLLAPSE_MARK}" if flagged(cell, "collapsed")
                                                                  else "")


def collapsed_cells(frame: pd.DataFrame) -> set[tuple]:
    """(dataset, split, backbone, method) of every cell with a collapsed seed."""
    if "collapsed" not in frame.columns:
        return set()
    hit = frame[frame["collapsed"].fillna(False).astype(bool)]
    return set(hit[list(CELL)].itertuples(index=False, name=None))


def rule_text(metric_names=("ndcg@10",)) -> str:
    names = " / ".join(dict.fromkeys(metric_names))
    chance = [f"{m} as its margin over {CHANCE[m]:g}" for m in dict.fromkeys(metric_names) if m in CHANCE]
    return (f"its {names} is below {COLLAPSE_FRACTION:g} x the median of its cell's seeds (same dataset, split, "
            "backbone, method" + (f"; {', '.join(chance)}" if chance else "") + ")")


def run_line(run) -> str:
    """One collapsed run, as listed under a table."""
    return (f"`{run['run_id']}` {run['dataset']}/{run['split']} / {run['backbone']} / {run['method']}, seed "
            f"{int(run['seed'])}: {run['metric']} {run['value']:.4f}, cell median {run['median']:.4f} "
            f"({int(run['seeds'])} seeds)")


def collapse_note(collapsed: pd.DataFrame) -> str:
    """The note under a Markdown table with collapsed seeds: the rule, then one line per run."""
    if collapsed.empty:
        return ""
    lines = [f"- {COLLAPSE_MARK} (collapsed seed): {len(collapsed)} run(s) where {rule_text(collapsed['metric'])}; "
             "a failed training (e.g. early stopping on a premature validation plateau) that the cell's mean, std "
             "and every comparison with the cell include:"]
    lines += [f"  - {run_line(run)}" for _, run in collapsed.iterrows()]
    return "\n".join(lines)


def collapse_latex(collapsed: pd.DataFrame) -> str:
    r"""The list beneath a LaTeX table with collapsed seeds (LaTeX already), or ""."""
    if collapsed.empty:
        return ""
    metrics = " / ".join(metric_label(m) for m in dict.fromkeys(collapsed["metric"]))
    runs = "; ".join(  # display names, as the table's cells (the .tex's key maps them to the ids)
        rf"\texttt{{{escape(r['run_id'])}}} {escape(r['dataset'])}/{escape(display_label('split', r['split']))} / "
        rf"{escape(display_label('backbone', r['backbone']))} / {escape(display_label('method', r['method']))}, "
        rf"seed {int(r['seed'])}: {r['value']:.4f} (cell median {r['median']:.4f})"
        for _, r in collapsed.iterrows())
    return (rf"$^{{{COLLAPSE}}}$ Collapsed seed ({metrics} below {COLLAPSE_FRACTION:g}$\times$ its cell's median "
            rf"over seeds, included in the cell): {runs}.")


def side_collapsed(store, specs) -> pd.DataFrame:
    """The collapsed seeds among the runs of one cell given by their specs (a claim's side: one context, its
    seeds), as `collapsed_runs` rows; a spec without a complete record under its id is left out (as
    `stats.compare` leaves it out)."""
    specs = [spec for spec in specs if store.has(spec.run_id)]
    if not specs:
        return collapsed_runs(pd.DataFrame())
    first = specs[0]
    rows = []
    for spec in specs:
        overall = store.load(spec.run_id)["metrics"]["overall"]
        rows.append({"run_id": spec.run_id, "dataset": first.dataset, "split": first.split,
                     "backbone": first.backbone, "method": first.method, "seed": spec.seed,
                     "protocol": method_protocol(first.method),
                     **{m: float(overall[m]) if overall.get(m) is not None else float("nan")
                        for m in ("auc", "ndcg@10")}})
    return collapsed_runs(pd.DataFrame(rows))


# --- counts per suite -------------------------------------------------------------------------------------

def convergence_frame(specs, store, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per stored run of the specs: its cell (as the tables label it), seed, whether it stopped at a
    cap (and which components, with what says so), and whether it collapsed (metric, value, cell median).
    `frame`: the specs' `tables.collect` frame when the caller has it (else `run_frame`)."""
    frame = run_frame(specs, store) if frame is None else frame
    columns = ["run_id", *CELL, "seed", "capped", "capped_components", "cap_detail", "unjudged_components",
               "collapsed", "metric", "value", "cell_median"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    runs = frame.drop_duplicates("run_id").set_index("run_id")
    collapsed = collapsed_runs(frame).set_index("run_id")
    rows = []
    for run_id, run in runs.iterrows():
        record = store.load(run_id)
        parts = capped_components(record)
        hit = collapsed.loc[run_id] if run_id in collapsed.index else None
        rows.append({"run_id": run_id, **{k: run[k] for k in CELL}, "seed": int(run["seed"]),
                     "capped": bool(parts), "capped_components": ", ".join(p.name for p in parts),
                     "cap_detail": "; ".join(f"{p.name}: {p.detail}" for p in parts),
                     "unjudged_components": ", ".join(c.name for c in unjudged_components(record)),
                     "collapsed": hit is not None, "metric": hit["metric"] if hit is not None else "",
                     "value": hit["value"] if hit is not None else float("nan"),
                     "cell_median": hit["median"] if hit is not None else float("nan")})
    return pd.DataFrame(rows, columns=columns)


def run_frame(specs, store) -> pd.DataFrame:
    """One row per stored run of the specs with what `convergence_frame` reads of `tables.collect`'s frame: its
    cell as the tables label it, seed, protocol and overall metrics (built here from the records, so that this
    module, which the tables import, imports no table)."""
    slabels, blabels, mlabels = split_labels(specs), backbone_labels(specs), method_labels(specs, store)
    rows = [{"run_id": spec.run_id, "dataset": spec.dataset, "split": slabels[spec.run_id],
             "backbone": blabels[spec.run_id], "method": mlabels[spec.run_id], "seed": spec.seed,
             "protocol": method_protocol(spec.method), **store.load(spec.run_id)["metrics"]["overall"]}
            for spec in specs if store.has(spec.run_id)]
    return pd.DataFrame(rows)


def convergence_counts(runs: pd.DataFrame, expected: int | None = None) -> dict[str, Any]:
    """Runs, cap-stopped runs (and cells, and per component), collapsed runs (and cells) of a
    `convergence_frame`."""
    capped, collapsed = runs[runs["capped"].astype(bool)], runs[runs["collapsed"].astype(bool)]
    out: dict[str, Any] = {"runs": len(runs)}
    if expected is not None:
        out["in suite"] = expected
    out |= {"cap-stopped": len(capped), "cap-stopped cells": len(capped.drop_duplicates(list(CELL))),
            "collapsed": len(collapsed), "collapsed cells": len(collapsed.drop_duplicates(list(CELL)))}
    for name in COMPONENTS:
        count = int(sum(name in parts.split(", ") for parts in capped["capped_components"]))
        if count:
            out[f"at cap: {name}"] = count
    for name in COMPONENTS:
        count = int(sum(name in str(parts).split(", ") for parts in runs["unjudged_components"]))
        if count:
            out[f"not judged: {name}"] = count
    return out


def convergence_tables(runs: pd.DataFrame, expected: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the counts as a one-row table, the flagged runs: cap-stopped or collapsed, one row each)."""
    counts = pd.DataFrame([convergence_counts(runs, expected)])
    listed = runs[runs["capped"].astype(bool) | runs["collapsed"].astype(bool)]
    flagged_runs = pd.DataFrame({
        "Run": listed["run_id"], "Dataset": listed["dataset"], "Split": listed["split"],
        "Backbone": listed["backbone"], "Method": listed["method"], "Seed": listed["seed"],
        CAP_MARK + " at cap": listed["cap_detail"].where(listed["capped"], "—"),
        COLLAPSE_MARK + " collapsed": [f"{r['metric']} {r['value']:.4f} (cell median {r['cell_median']:.4f})"
                                       if r["collapsed"] else "—" for _, r in listed.iterrows()]})
    return counts, flagged_runs


def convergence_markdown(suite_name: str, runs: pd.DataFrame, expected: int | None = None) -> str:
    counts, listed = convergence_tables(runs, expected)
    text = [f"Convergence of suite `{suite_name}`, counted from its run records.", "",
            counts.to_markdown(index=False), "",
            f"- {CAP_MARK} cap-stopped: a trained component stopped at its epoch cap (or a fixed-budget LLM step "
            "kept its last evaluated state) instead of early on validation: not converged, a lower bound "
            f"(components: {', '.join(COMPONENTS)}; bench/report/convergence.py)",
            "- not judged: a trained component whose record cannot tell (an LLM step evaluated on validation "
            "once); no mark",
            f"- {COLLAPSE_MARK} collapsed: a run where {rule_text(['ndcg@10 (ranking)', 'auc (pointwise)'])}"]
    if not listed.empty:
        text += ["", listed.to_markdown(index=False, disable_numparse=True)]
    return "\n".join(text) + "\n"


def _suite_rows(names, results: Path) -> list[dict[str, Any]]:
    from bench.records import ResultStore
    from bench.spec import expand, load_suite

    store = ResultStore(results)
    rows = []
    for name in names:
        specs = expand(load_suite(name))
        runs = convergence_frame(specs, store)
        rows.append({"suite": name, **convergence_counts(runs, expected=len(specs))})
    return rows


def main(argv=None) -> int:
    """`python -m bench.report.convergence [--suite a,b] [--results DIR] [--runs]`: the counts per suite
    (runs stored of expected, cap-stopped, collapsed) as a Markdown table; `--runs` adds the flagged runs."""
    from bench.spec import suite_names

    parser = argparse.ArgumentParser(prog="python -m bench.report.convergence", description=main.__doc__)
    parser.add_argument("--suite", help="comma-separated suite names (default: every suite)")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--runs", action="store_true", help="also list every cap-stopped or collapsed run")
    args = parser.parse_args(argv)
    names = args.suite.split(",") if args.suite else suite_names()
    rows = _suite_rows(names, args.results)
    table = pd.DataFrame(rows).fillna(0)
    for column in table.columns[1:]:
        table[column] = table[column].astype(int)
    print(table.to_markdown(index=False))
    if args.runs:
        from bench.records import ResultStore
        from bench.spec import expand, load_suite

        for name in names:
            runs = convergence_frame(expand(load_suite(name)), ResultStore(args.results))
            _, listed = convergence_tables(runs)
            if not listed.empty:
                print(f"\n{name}:\n" + listed.to_markdown(index=False, disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
