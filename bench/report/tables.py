"""Tables derived from run records: methods x (dataset, split), mean ± std over seeds, gain over
`random`, parameters and latency, in Markdown, LaTeX (booktabs) and CSV. Nothing here is hand-edited:
each table file names the run records it was built from.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.components import find_settings
from bench.records import ResultStore, atomic_write_text
from bench.report.convergence import (
    cell_marks,
    collapse_note,
    collapsed_cells,
    collapsed_runs,
    convergence_frame,
    convergence_markdown,
    flagged,
)
from bench.report.frame import cf_model_facts, results_frame, wide_frame  # noqa: F401 - cf_model_facts re-exported
from bench.report.labels import (
    CAP_MARK,
    COLLAPSE_MARK,
    LOAD_MARK,
    NA,
    NOT_RUN,
    backbone_labels,
    display,
    display_table,
    frame_protocol,
    key_line,
    latency_cell,
    latency_loaded,  # noqa: F401 - re-exported (the tables' loaded-latency mark)
    method_labels,
    method_protocol,
    split_labels,
    split_segment_note,
    table_used,
)
from bench.report.latex import (
    LatexSelection,
    frame_grid,
    grid_frame,
    latex_files,
    main_grid,
    missing_note,
    shots_note,
    tabular,
)
from bench.report.paradigms import (
    paradigms_frame,
    paradigms_latex,
    paradigms_markdown,
    paradigms_notes,
    paradigms_table,
)
from bench.report.stats import (
    BETTER_MARK,
    WORSE_MARK,
    LeadTest,
    as_directions,
    compare,
    correct,
    decisive_p,
    direction,
    family_short,
    format_gain,
    format_p,
    format_seeds,
    format_seeds_needed,
    mark,
    mde_line,
    method_note,
    seeds_note,
)
from bench.spec import RunSpec, Suite, with_stored_seeds

DEFAULT_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
SEGMENTS = ("user:warm", "user:cold", "item:head", "item:tail", "item:warm", "item:cold")
CATALOGUE_METRICS = ("coverage@10", "coverage@20", "tail_share@10", "tail_share@20")


def collect(specs: list[RunSpec], store: ResultStore) -> pd.DataFrame:
    """One row per (run, segment) with every metric (runs without a record are absent): the wide view
    (`bench.report.frame.wide_frame`) of the one results frame, which every table builder reads. `capped` (and
    `capped_parts`, the components at their cap) and `collapsed` come from `bench.report.convergence`; `protocol`
    is the one the run's method class declares (`bench.method.Method.protocol`)."""
    return wide_frame(results_frame(store, specs))


def load_note(frame: pd.DataFrame) -> str:
    """The note under a table with latencies measured on a loaded machine."""
    runs = frame.drop_duplicates("run_id")
    loaded = runs[runs["latency_loaded"]] if "latency_loaded" in runs else runs.iloc[:0]
    if loaded.empty:
        return ""
    return (f"- {LOAD_MARK} (latency): {len(loaded)} of {len(runs)} runs timed while the machine's 1-minute load "
            "average exceeded its cores (other jobs sharing the CPU): those milliseconds are upper bounds")


def cap_note(frame: pd.DataFrame) -> str:
    """The note under a table with cap-stopped cells: how many runs and cells, which trained components
    (`bench.report.convergence`), and what ‡ means."""
    runs = frame.drop_duplicates("run_id")
    capped = runs[runs["capped"]]
    if capped.empty:
        return ""
    cells = capped.drop_duplicates(["dataset", "split", "backbone", "method"])
    text = (f"- {CAP_MARK}: {len(capped)} of {len(runs)} runs ({len(cells)} cells) stopped at the epoch cap "
            "without early stopping on validation: not converged, read those cells as lower bounds")
    if "capped_parts" in capped.columns:
        counts: dict[str, int] = {}
        for parts in capped["capped_parts"]:
            for name in filter(None, str(parts).split(", ")):
                counts[name] = counts.get(name, 0) + 1
        if set(counts) - {"training"}:  # say which component when it is not the main training alone
            text += "; at the cap, by component: " + ", ".join(f"{k} {v}" for k, v in counts.items())
            if any(name.startswith("LLM step") for name in counts):
                text += (" (an LLM step runs a fixed budget: at the cap when its best validation AUC was the last "
                         "of its evaluations, still improving)")
    return text


def _cell(values: pd.Series) -> str:
    if len(values) == 1:
        return f"{values.iloc[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def _row_cells(frame: pd.DataFrame, columns):
    """Per table row (backbone, method), in first-seen order: its records and, for every (dataset, split)
    key of `columns` in that order, the row's records there (empty where it has no run), so every row gets
    every column group (main_table, ctr_table, ctr_segment_table)."""
    for names, group in frame.groupby(["backbone", "method"], sort=False):
        cells = dict(iter(group.groupby(["dataset", "split"], sort=False)))
        yield names, group, {key: cells.get(key, group.iloc[:0]) for key in columns}


def main_table(frame: pd.DataFrame, metrics=DEFAULT_METRICS, segment: str = "overall",
               significant: dict[tuple, str] | set[tuple] | None = None, tested_metric: str = "ndcg@10",
               baseline: str = "random") -> pd.DataFrame:
    """Rows (backbone, method); per (dataset, split): metric cells, gain of NDCG@10 over the baseline.
    `significant` maps (dataset, split, backbone, method) keys to "better" / "worse" (`significance_marks`; a
    set: better): that `tested_metric` cell gets ↑ / ↓."""
    significant = as_directions(significant)
    data = frame[frame["segment"] == segment]
    # the splits in the order they first appear (the cost columns after them all); a split a row has no
    # run on prints —
    splits = list(dict.fromkeys(zip(data["dataset"], data["split"])))
    out_rows = []
    for (backbone, method), group, cells in _row_cells(data, splits):
        row = {"Backbone": backbone, "Method": method}
        for (dataset, split), cell in cells.items():
            prefix = f"{dataset}/{split}"
            if cell.empty:
                row.update({f"{prefix} {name}": "—" for name in (*metrics, "gain ndcg@10", "seeds")})
                continue
            capped = cell_marks(cell)
            for metric in metrics:
                verdict = significant.get((dataset, split, backbone, method), "") if metric == tested_metric else ""
                row[f"{prefix} {metric}"] = _cell(cell[metric]) + (f" {mark(verdict)}" if verdict else "") + capped
            base = data[(data["backbone"] == backbone) & (data["method"] == baseline)
                        & (data["dataset"] == dataset) & (data["split"] == split)]
            gain = "—"
            if method != baseline and len(base):
                gain = f"{100 * (cell['ndcg@10'].mean() / base['ndcg@10'].mean() - 1):+.1f}%"
                if flagged(cell, "collapsed") or flagged(base, "collapsed"):  # it rests on a collapsed seed
                    gain += f" {COLLAPSE_MARK}"
            row[f"{prefix} gain ndcg@10"] = gain
            row[f"{prefix} seeds"] = int(cell["seed"].nunique())
        row["Trainable params"] = f"{int(group['trainable'].median()):,}"
        row["Latency ms (median)"] = latency_cell(group)
        out_rows.append(row)
    return pd.DataFrame(out_rows)


def segment_table(frame: pd.DataFrame, metric: str = "ndcg@10", names: bool = False) -> pd.DataFrame:
    """Rows (dataset, split, backbone, method); columns: the metric per segment. `names` (Markdown): display
    names in the label columns and headers, and a segment a row's runs do not have (empty by construction,
    e.g. warm users of held-out-user splits) as "n/a" instead of "—"."""
    rows = []
    held = set(frame["segment"])  # item:warm / item:cold exist in records from the cold-item change on
    for key, group in frame.groupby(["dataset", "split", "backbone", "method"], sort=False):
        row = dict(zip(["Dataset", "Split", "Backbone", "Method"], key))
        for segment in ("overall", *(s for s in SEGMENTS if s in held)):
            cell = group[group["segment"] == segment]
            n_users = int(cell["n_users"].iloc[0]) if len(cell) else 0
            capped = cell_marks(cell)
            head = f"{display('segment', segment)} {display('metric', metric)}" if names else f"{segment} {metric}"
            row[head] = _cell(cell[metric]) + f" (n={n_users}){capped}" if len(cell) else NA if names else "—"
        rows.append(row)
    table = pd.DataFrame(rows)
    return display_table(table) if names and not table.empty else table


def catalogue_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows (dataset, split, backbone, method): item coverage@K (share of the candidate items in at least one
    evaluated user's top-K) and tail share@K (mean share of tail items in a user's top-K), mean ± std over
    seeds; empty when no record holds them (records from before they were computed)."""
    data = frame[frame["segment"] == "catalogue"] if "segment" in frame else frame.iloc[:0]
    if data.empty or not set(CATALOGUE_METRICS) & set(data.columns):
        return pd.DataFrame()
    rows = []
    for key, cell in data.groupby(["dataset", "split", "backbone", "method"], sort=False):
        row = dict(zip(["Dataset", "Split", "Backbone", "Method"], key))
        for metric in CATALOGUE_METRICS:
            row[metric] = (_cell(cell[metric]) + cell_marks(cell) if metric in cell and cell[metric].notna().any()
                           else "—")
        rows.append(row)
    return pd.DataFrame(rows)


def significance_results(specs: list[RunSpec], store: ResultStore, metric: str = "ndcg@10",
                         correction: str = "holm", baseline: str = "random") -> pd.DataFrame:
    """Each method vs the baseline (the suite's `baseline`, default `random`) on the same dataset / split (its
    label: the split's swept settings included) / backbone (`bench.report.stats.compare`: the two-level
    bootstrap over seeds and users as the primary test, every stored seed of each side), numeric. One family:
    the primary p (`p_corr`) is corrected over the table's rows (`family_size`); `direction` is "better" /
    "worse" where that corrected p < 0.05; the secondary p (user-level Wilcoxon, Welch t over seeds) stay raw."""
    groups: dict[tuple, list[RunSpec]] = {}
    # split labels, not names: runs of one split under different settings (cold_items with candidates all /
    # cold; ctr_temporal at each shot count) are different comparisons, never pooled as extra seeds
    labels, mlabels, slabels = backbone_labels(specs), method_labels(specs, store), split_labels(specs)
    for spec in specs:
        groups.setdefault((spec.dataset, slabels[spec.run_id], labels[spec.run_id], mlabels[spec.run_id]),
                          []).append(spec)
    rows = []
    for (dataset, split, backbone, method), runs in groups.items():
        base = groups.get((dataset, split, backbone, baseline))
        if method == baseline or not base:
            continue
        result = compare(store, runs, base, metric)
        if result["n_seeds"]:
            rows.append({"Dataset": dataset, "Split": split, "Backbone": backbone, "Method": method, **result})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p"] = [decisive_p(r) for _, r in table.iterrows()]
        table["p_corr"] = correct(table["p"].tolist(), correction)
        table["direction"] = [direction(r, r["p_corr"]) for _, r in table.iterrows()]
        table["family_size"] = len(table)
        table["correction"] = correction
    return table


def significance_marks(results: pd.DataFrame) -> dict[tuple, str]:
    """(dataset, split, backbone, method) -> "better" / "worse" for the significant rows of the results."""
    if results.empty:
        return {}
    return {(r["Dataset"], r["Split"], r["Backbone"], r["Method"]): r["direction"]
            for _, r in results.iterrows() if r["direction"]}


def significance_table(specs: list[RunSpec], store: ResultStore, metric: str = "ndcg@10",
                       correction: str = "holm", results: pd.DataFrame | None = None,
                       baseline: str = "random") -> pd.DataFrame:
    """The significance table as printed: the gain with its two-level 95% interval, the primary p raw and
    corrected over the table's family (the column head names it), `Significant` better / worse / no, the
    secondary p (user-level Wilcoxon, Welch t over seeds; raw), d_z, n users (non-zero difference), seeds a
    side, the seed share of the standard error, the seeds the observed variance calls for, and the primary
    test's minimum detectable effect."""
    table = significance_results(specs, store, metric, correction, baseline) if results is None else results
    if table.empty:
        return table
    users = table["unit"] != "seeds"
    out = table[["Dataset", "Split", "Backbone", "Method"]].copy()
    out[f"{metric} method"] = table["mean_a"].map(lambda v: f"{v:.4f}")
    out[f"{metric} {baseline}"] = table["mean_b"].map(lambda v: f"{v:.4f}")
    for side, column in (("collapsed_a", f"{metric} method"), ("collapsed_b", f"{metric} {baseline}")):
        if side in table.columns:  # a side whose cell holds a collapsed seed (write_tables adds the flags)
            out[column] = out[column] + np.where(table[side].fillna(False).astype(bool), f" {COLLAPSE_MARK}", "")
    out["Gain % [95% CI]"] = [format_gain(r["relative"], r["ci_low"], r["ci_high"]) for _, r in table.iterrows()]
    out["p"] = table["p"].map(format_p)
    out[family_short(correction, len(table))] = table["p_corr"].map(format_p)
    out["Significant"] = table["direction"].map(lambda v: v or "no")
    out["Wilcoxon p (users)"] = table["wilcoxon_p"].map(format_p)
    out["Welch t p (seeds)"] = table["ttest_p"].map(format_p)
    out["d_z"] = table["effect_dz"].map(lambda v: "—" if v != v else f"{v:.3f}")
    out["Users (≠ 0)"] = [f"{r['n_users']} ({r['n_nonzero']})" if u else "— (seed-level)"
                          for u, (_, r) in zip(users, table.iterrows())]
    out["Seeds"] = [format_seeds(r) for _, r in table.iterrows()]
    out["Seed share %"] = table["seed_share"].map(lambda v: "—" if v != v else f"{100 * v:.0f}")
    out["Seeds needed"] = [format_seeds_needed(r) for _, r in table.iterrows()]
    out["MDE %"] = table["mde"].map(lambda v: "—" if v != v else f"±{100 * v:.1f}")
    return out


def mde_lines(results: pd.DataFrame, metric: str = "ndcg@10", baseline: str = "random") -> list[str]:
    """One line per test set (dataset, split) of the significance results: the median MDE of the primary test
    (seeds and users) over its comparisons and its number of users."""
    lines = []
    if results.empty:
        return lines
    tested = results[(results["unit"] != "seeds") & results["mde"].notna()]
    for (dataset, split), group in tested.groupby(["Dataset", "Split"], sort=False):
        spread = (f"; median over {len(group)} comparisons, {100 * group['mde'].min():.1f}–"
                  f"{100 * group['mde'].max():.1f}%" if len(group) > 1 else "")
        lines.append(mde_line(float(group["mde"].median()), metric, int(group["n_users"].max()),
                              f", {dataset}/{split}, relative to {baseline}{spread}"))
    return lines


def significance_note(results: pd.DataFrame, correction: str, baseline: str, metric: str = "ndcg@10",
                      what: str = "this suite's significance table") -> str:
    """The lines under a table with ↑ / ↓ marks or the significance table: what is compared, the primary test
    and its family, the secondary columns, what the seeds support."""
    if results.empty:
        return ""
    return (f"- {BETTER_MARK} / {WORSE_MARK} on {metric}: significantly better / worse than `{baseline}` (same "
            f"dataset, split, backbone). {method_note(correction, len(results), what)}\n- {seeds_note()}")


CTR_SEGMENTS = ("overall", "pair:warm", "pair:cold")


def ctr_intervals(frame: pd.DataFrame, store: ResultStore) -> dict[tuple, tuple[float, float]]:
    """(dataset, split, backbone, method) -> 95% user-bootstrap interval of the cell's AUC (the mean over its
    seeds, every seed scored on the same test pairs), from the runs' saved pairs (`pairs.csv.gz`); cells
    with a run whose pairs were not saved, or whose runs scored different pairs, are left out."""
    from bench.eval.pointwise import auc_interval

    out = {}
    overall = frame[frame["segment"] == "overall"]
    for key, cell in overall.groupby(["dataset", "split", "backbone", "method"], sort=False):
        pairs = [store.pairs(run_id) for run_id in cell["run_id"]]
        if any(p is None for p in pairs):
            continue
        pairs = [p.sort_values(["user", "item"], kind="mergesort").reset_index(drop=True) for p in pairs]
        if any(not p[["user", "item", "label"]].equals(pairs[0][["user", "item", "label"]]) for p in pairs[1:]):
            continue
        out[key] = auc_interval(pairs[0]["user"].to_numpy(), pairs[0]["label"].to_numpy(),
                                np.stack([p["score"].to_numpy() for p in pairs]))
    return out


def _ctr_prefixes(frame: pd.DataFrame) -> dict[tuple, str]:
    """(dataset, split label) -> column prefix: the sweep point alone (`shots=16`) when every column is one
    dataset's one split, else dataset/split."""
    keys = list(dict.fromkeys(zip(frame["dataset"], frame["split"])))
    names = {(d, label.split(" [")[0]) for d, label in keys}
    if len(names) == 1:
        return {k: (k[1].split(" [", 1)[1].rstrip("]") if " [" in k[1] else k[1]) for k in keys}
    return {k: (k[1] if len({d for d, _ in keys}) == 1 else f"{k[0]}/{k[1]}") for k in keys}


def ctr_table(frame: pd.DataFrame, intervals: dict | None = None) -> pd.DataFrame:
    """Pointwise suites (CoLLM / TALLRec): rows (backbone, method); per split (or sweep point, e.g. shots):
    overall AUC (mean ± std over seeds) with its 95% user-bootstrap interval, UAUC and the seed count;
    trainable / frozen parameters, training seconds and milliseconds per scored pair."""
    intervals = intervals or {}
    prefixes = _ctr_prefixes(frame)
    all_pairs = frame.groupby("dataset")["cf_pairs"].max() if "cf_pairs" in frame else None
    rows = []
    for (backbone, method), group, cells in _row_cells(frame, prefixes):
        row = {"Backbone": backbone, "Method": method}
        for key, cell in cells.items():
            prefix = prefixes[key]
            part = cell[cell["segment"] == "overall"]
            if part.empty:
                row[f"{prefix} AUC [95% CI]"] = row[f"{prefix} UAUC"] = "—"
                row[f"{prefix} seeds"] = 0
                continue
            capped = cell_marks(part)
            interval = intervals.get((*key, backbone, method))
            ci = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
            row[f"{prefix} AUC [95% CI]"] = _cell(part["auc"]) + ci + capped
            row[f"{prefix} UAUC"] = _cell(part["uauc"]) + capped
            row[f"{prefix} seeds"] = int(part["seed"].nunique())
        if "cf_valid_auc" in frame:
            row[CF_COLUMN] = cf_valid_cell(group, all_pairs)
        row["Trainable params"] = f"{int(group['trainable'].median()):,}"
        row["Frozen params"] = f"{int(group['frozen'].median()):,}" if "frozen" in group else "—"
        row["Train s (median)"] = f"{group['train_s'].median():.1f}"
        row["ms / pair (median)"] = latency_cell(group)
        rows.append(row)
    return pd.DataFrame(rows)


CF_COLUMN = "CF valid AUC (all pairs)"


def _all_pair_models(group: pd.DataFrame, all_pairs) -> pd.DataFrame:
    """A row's CF models trained on every training pair of their dataset's split (one line per model: a CoLLM
    row's runs at several shot counts share their seed's encoder)."""
    runs = group[group["segment"] == "overall"]
    runs = runs[(runs["cf_key"] != "") & (runs["cf_pairs"] == runs["dataset"].map(all_pairs))]
    return runs.drop_duplicates("cf_key")


def cf_valid_cell(group: pd.DataFrame, all_pairs) -> str:
    """The best validation AUC (mean ± std over seeds) of the CF models a row trained or mapped on every training
    pair: a CF row's shots-0 models, a CoLLM row's pre-trained encoders; "—" for rows without one."""
    models = _all_pair_models(group, all_pairs)
    return _cell(models["cf_valid_auc"]) if len(models) else "—"


def cf_encoder_lines(frame: pd.DataFrame) -> list[str]:
    """Which CF row each CoLLM row's encoders are: the same cached models (cache keys) as that row's runs on all
    training pairs, checked from the records; an encoder no CF row ran is said so."""
    if "cf_key" not in frame or not (frame["cf_key"] != "").any():
        return []
    all_pairs = frame.groupby("dataset")["cf_pairs"].max()
    models = {names: _all_pair_models(group, all_pairs)
              for names, group in frame.groupby(["backbone", "method"], sort=False)}
    owners = {}  # cache key -> the CF row that trained it (its own model, not one it maps)
    for names, group in models.items():
        for key in group.loc[group["cf_role"] == "trained", "cf_key"]:
            owners.setdefault(key, names)
    lines = []
    for names, group in models.items():
        keys = list(group.loc[group["cf_role"] == "mapped", "cf_key"])
        if not keys:
            continue
        rows = sorted({owners[k][1] for k in keys if k in owners})
        unmatched = [k for k in keys if k not in owners]
        text = (f"{names[1]}: its {len(keys)} CF encoder(s) ({', '.join(sorted(keys))})"
                + (f" are the very models of the `{'`, `'.join(rows)}` row on all training pairs (same cache keys)"
                   if rows else "")
                + (f"; {len(unmatched)} without a stored CF row run" if unmatched else ""))
        lines.append(text)
    if not lines:
        return []
    return [f"- {CF_COLUMN}: best validation AUC of the CF model trained on every training pair (a CF row's own; "
            "CoLLM's pre-trained encoder, which it maps and keeps frozen)"] + [f"  - {line}" for line in lines]


def ctr_segment_table(frame: pd.DataFrame, absent=None) -> pd.DataFrame:
    """Pointwise suites: AUC / UAUC on the warm and cold pairs (CoLLM's segments) per split or sweep point.
    `absent(dataset, split, backbone, method)` (Markdown): what a cell without runs prints ("n/a" / "not run";
    default "—")."""
    prefixes = _ctr_prefixes(frame)
    rows = []
    for (backbone, method), _, cells in _row_cells(frame, prefixes):
        row = {"Backbone": backbone, "Method": method}
        for key, cell in cells.items():
            prefix = prefixes[key]
            for segment in CTR_SEGMENTS[1:]:
                part = cell[cell["segment"] == segment]
                name = segment.split(":")[-1]
                n = f" (n={int(part['n_pairs'].iloc[0])})" if len(part) else ""
                empty = absent(*key, backbone, method) if absent is not None and cell.empty else NA if absent else "—"
                for metric in ("auc", "uauc"):
                    row[f"{prefix} {name} {metric.upper()}"] = _cell(part[metric]) + n + cell_marks(part) if len(
                        part) else empty
        rows.append(row)
    return pd.DataFrame(rows)


def ctr_caption_note(frame: pd.DataFrame, intervals: dict) -> str:
    """The AUC intervals in a few words, for a LaTeX caption."""
    widths = [(high - low) / 2 for low, high in intervals.values()]
    pairs = sorted({int(v) for v in frame[frame["segment"] == "overall"]["n_pairs"]})
    return (f"95% user-bootstrap intervals of AUC: ±{min(widths):.3f} to ±{max(widths):.3f} "
            f"({'/'.join(map(str, pairs))} test pairs, the same for every row).")


def ctr_sample_note(frame: pd.DataFrame, intervals: dict) -> str:
    """What the test sample is and how wide its AUC intervals are (the few-shot protocol's power)."""
    overall = frame[frame["segment"] == "overall"]
    pairs = sorted({int(v) for v in overall["n_pairs"]})
    widths = [(high - low) / 2 for low, high in intervals.values()]
    text = (f"- Test pairs per run: {', '.join(map(str, pairs))} (one fixed sample, the same for every row). "
            "AUC [95% CI] (in main.csv): percentile bootstrap over test users (each user's pairs resampled together; with "
            "several seeds, of the mean of their AUCs)")
    if widths:
        text += f"; half-widths {min(widths):.3f}–{max(widths):.3f}"
    return text + "."


def family_report(family: str):
    """A method family's report module (`methods/<family>/report.py`), or None where the family has none."""
    try:
        return importlib.import_module(f"methods.{family}.report")
    except ModuleNotFoundError as err:
        if err.name != f"methods.{family}.report":
            raise
        return None


def family_tables(specs: list[RunSpec], store: ResultStore, hook: str = "tables") -> dict[str, pd.DataFrame]:
    """The tables each method family adds for its own runs, by table name, empty ones left out: a family's
    report module's `hook(specs, store) -> {name: DataFrame}` (families without the module or the hook add
    none). `tables`: tables of their own, in every format (PtE's offline cost); `examples`: example rows a
    reader looks at, written as Markdown only (PtE's profiles)."""
    from bench.catalog import METHODS

    out: dict[str, pd.DataFrame] = {}
    for family in sorted({METHODS.family(spec.method) for spec in specs}):
        module = family_report(family)
        if module is None or not hasattr(module, hook):
            continue
        family_specs = [spec for spec in specs if METHODS.family(spec.method) == family]
        out.update({name: table for name, table in getattr(module, hook)(family_specs, store).items()
                    if not table.empty})
    return out


def render(table: pd.DataFrame, fmt: str, numparse: bool = True) -> str:
    """The table as Markdown, LaTeX or CSV; `numparse` False keeps formatted numbers (0.030) as written."""
    if fmt == "markdown":
        # a `|` or a line break inside a cell or a header would end the cell or the row: escaped ("\\|", "<br>")
        def cell(value):
            if not isinstance(value, str):
                return value
            return value.replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>").replace("\r", "<br>")

        escaped = table.rename(columns=cell)
        if any(isinstance(v, str) and ("|" in v or "\n" in v or "\r" in v) for v in table.to_numpy().ravel()):
            escaped = escaped.apply(lambda column: column.map(cell))
        return escaped.to_markdown(index=False, disable_numparse=not numparse)
    if fmt == "latex":  # a bare booktabs tabular; the suite's tables come from `bench.report.latex`
        return tabular(frame_grid(table)) + "\n"
    if fmt == "csv":
        return table.to_csv(index=False)
    raise ValueError(fmt)


def ranking_protocol(specs: list[RunSpec]) -> str:
    """How the runs were evaluated: the protocol their method classes declare, and for ranking runs their split
    settings (full ranking unless eval_negatives > 0)."""
    from bench.data.splits import resolve_split_params

    ranking = [spec for spec in specs if method_protocol(spec.method) == "ranking"]
    if not ranking:
        return "pointwise: AUC / UAUC over the labelled test pairs"
    negatives = sorted({int(resolve_split_params(spec.split, spec.split_settings).get("eval_negatives", 0))
                        for spec in ranking})
    described = [("full ranking, train+valid items masked" if n == 0 else
                  f"sampled: each test positive ranked among {n} sampled negatives (train+valid items excluded)")
                 for n in negatives]
    return " / ".join(described)


def pointwise_cap_lines(specs: list[RunSpec]) -> list[str]:
    """The epoch caps of the models trained outside a backbone (the ctr suite's pointwise CF rows, CoLLM's CF
    encoder), which ‡ refers to: one line per (what, cap, patience), naming the methods."""
    groups: dict[tuple, list[str]] = {}
    for spec in specs:
        settings = spec.method_settings
        for what, part in (("", settings if spec.backbone == "none" else {}),
                           (" CF encoder", find_settings(settings, "cf"))):
            if isinstance(part, dict) and "epochs" in part and "patience" in part:
                key = (what, part["epochs"], part["patience"])
                if spec.method not in groups.setdefault(key, []):
                    groups[key].append(spec.method)
    return [f"- {', '.join(methods)}{what}: epochs cap {epochs}, early stop after {patience} epochs without "
            "validation AUC gain" for (what, epochs, patience), methods in groups.items()]


def settings_note(suite: Suite, specs: list[RunSpec], base_seeds: list[int] | None = None) -> str:
    """What a reader must know to interpret the numbers: caps, early stopping, encoder, splits."""
    lines = [f"Suite `{suite.name}`: {suite.description}".rstrip()]
    by_backbone: dict[str, list[dict]] = {}
    for spec in specs:
        if spec.backbone != "none":  # `none`: the ctr suite's own models
            by_backbone.setdefault(spec.backbone, []).append(spec.backbone_settings)
    for backbone, settings in by_backbone.items():
        value = functools.partial(_by_row, settings)
        line = (f"- {backbone}: epochs cap {value('epochs')}, early stop after {value('stopping_step')} "
                f"evaluations without validation {value('valid_metric', 'NDCG@10')} gain, batch "
                f"{value('train_batch_size')}, lr {value('learning_rate')}, embedding {value('embedding_size')}")
        if "max_len" in settings[0]:
            line += (f", history {value('max_len')}, training targets per user "
                     f"{value('train_targets_per_user', shown_for_none='all')}")
        lines.append(line)
    lines += pointwise_cap_lines(specs)
    for key, axis in suite.grid.items():
        values = axis if isinstance(axis, list) else axis.values
        lines.append(f"- grid: {key} in {values}" + ("" if isinstance(axis, list) else
                     f" for {', '.join(axis.methods or suite.methods)}"
                     + "".join(f"; {m} skips {v}" for m, v in axis.skip.items())))
    seeds = base_seeds or sorted({spec.seed for spec in specs}) or suite.seeds  # parts may add seeds (ctr)
    extra = _extra_seed_cells(specs, set(seeds))
    lines.append(f"- encoder: {suite.encoder}; seeds: {seeds}{extra}; {ranking_protocol(specs)}")
    lines += seed_shared_lines(specs)
    lines += tuning_lines(suite.name)
    if suite.notes:
        lines.append(f"- {suite.notes.strip()}")
    if suite.reference:
        lines.append(f"\nPublished reference values (context only, never rows of this table: other models, splits "
                     f"and test samples): {suite.reference.strip()}")
    return "\n".join(lines)


def seed_shared_lines(specs: list[RunSpec]) -> list[str]:
    """One line naming what each method trains once for all run seeds (`Method.seed_shared`): the seeds of
    those rows retrain the rest only, so their intervals leave that part's training variance out."""
    from bench.catalog import METHODS

    shared: dict[str, list[str]] = {}
    for spec in specs:
        cls = METHODS.get(spec.method)
        text = cls.seed_shared(cls.Settings.model_validate(spec.method_settings))
        if text and spec.method not in shared.setdefault(text, []):
            shared[text].append(spec.method)
    if not shared:
        return []
    parts = "; ".join(f"{', '.join(methods)}: {text}" for text, methods in shared.items())
    return [f"- trained once and shared by every seed (the run seed retrains the rest; intervals over seeds leave "
            f"this part's training variance out): {parts}"]


def _by_row(settings: list[dict], key: str, default=None, shown_for_none: str = "None") -> str:
    """One setting across rows: its value, or "by row v1 / v2 ..." (numbers sorted) where rows differ (a grid, a
    tuned profile), never only the first row's."""
    values = list(dict.fromkeys(s.get(key, default) for s in settings))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        values = sorted(values)
    shown = list(dict.fromkeys(shown_for_none if v is None else str(v) for v in values))
    return shown[0] if len(shown) == 1 else f"by row {' / '.join(shown)}"


def tuning_lines(suite_name: str) -> list[str]:
    """Whether the rows are tuned, and each tuned cell's budget (issue 28): a `tuned` profile's table (suite name
    `<suite>-tuned[-<profile>]`) lists every cell's trials and CPU-minutes from the profile's provenance and marks
    unequal budgets (rows tuned with different trial counts or pruners are not an equal-budget comparison); any
    other table says its rows run at their suite's settings, untuned."""
    base, _, profile = suite_name.partition("-tuned")
    from bench.tuning import tuned_provenance

    if not _:
        line = (f"- tuning: none; every row runs at the suite's settings (`bench tune --suite {suite_name}` tunes "
                f"each cell with an equal budget, `--profile tuned` reruns the result)")
        tuned = sorted(cell for cell, facts in tuned_provenance(suite_name, "tuned").items() if facts.get("tuned", True))
        if tuned:  # the same rows tuned: where their verdicts are read again
            line += (f"; {len(tuned)} of its cells are tuned with an equal budget ({', '.join(tuned)}): "
                     f"`{suite_name}-tuned/tuned_vs_default.md` compares each with its row here")
        return [line]

    provenance = tuned_provenance(base, "tuned" + profile)
    tuned = {cell: facts for cell, facts in sorted(provenance.items()) if facts.get("tuned", True)}
    lines = ["- tuning: `bench tune` (validation only), per cell: " + "; ".join(
        f"{cell} {facts.get('trials')} trials, {float(facts.get('cpu_minutes') or 0):.1f} CPU-min, valid "
        f"{facts.get('best_value')} (defaults {facts.get('default_value')})"
        + (f", best {', '.join(facts['at_edge'])} at the edge of its searched range" if facts.get("at_edge") else "")
        for cell, facts in tuned.items())]
    lines += [f"- not tuned: {cell} ({facts.get('reason', 'nothing to tune')})"
              for cell, facts in sorted(provenance.items()) if not facts.get("tuned", True)]
    budgets = {(facts.get("trials"), facts.get("pruner")) for facts in tuned.values()}
    if len(budgets) > 1:
        lines.append("- UNEQUAL TUNING BUDGETS: " + ", ".join(
            f"{cell} {facts.get('trials')} trials / pruner {facts.get('pruner')}" for cell, facts in tuned.items())
            + "; these rows are not an equal-budget comparison")
    return lines


def tuned_vs_default(suite: Suite, specs: list[RunSpec], store: ResultStore, tuned: pd.DataFrame,
                     correction: str = "holm", metric: str = "ndcg@10") -> pd.DataFrame:
    """A tuned profile's table (suite `<base>-tuned[-<profile>]`): per tuned row, its budget, validation score and
    test metric at the suite's settings and tuned, and its gain over the baseline in each, so every verdict of the
    untuned table can be read again after equal tuning (issue 28). The untuned gains come from the untuned suite's
    own significance family (its p as its tables print them); the tuned ones from this table's (`tuned`)."""
    base, found, profile = suite.name.partition("-tuned")
    if not found:
        return pd.DataFrame()
    from bench.spec import expand, load_suite
    from bench.tuning import tuned_provenance

    default_suite = load_suite(base, profile.lstrip("-") or None)
    default_specs = expand(default_suite)
    provenance = tuned_provenance(base, "tuned" + profile)
    default = significance_results(default_specs, store, metric, correction, suite.baseline)
    slabels, blabels, mlabels = split_labels(specs), backbone_labels(specs), method_labels(specs, store)
    cells: dict[tuple, dict[str, list[RunSpec]]] = {}
    for spec in specs:
        key = (spec.dataset, slabels[spec.run_id], blabels[spec.run_id], mlabels[spec.run_id])
        cells.setdefault(key, {"tuned": [], "default": []})["tuned"].append(spec)
    dlabels = (split_labels(default_specs), backbone_labels(default_specs), method_labels(default_specs, store))
    for spec in default_specs:
        key = (spec.dataset, dlabels[0][spec.run_id], dlabels[1][spec.run_id], dlabels[2][spec.run_id])
        if key in cells:
            cells[key]["default"].append(spec)

    def values(runs: list[RunSpec]) -> np.ndarray:
        return np.array([store.load(s.run_id)["metrics"]["overall"][metric] for s in runs if store.has(s.run_id)])

    def gain(table: pd.DataFrame, key: tuple) -> tuple[str, str]:
        if table.empty:
            return "", ""
        hit = table[(table["Dataset"] == key[0]) & (table["Split"] == key[1]) & (table["Backbone"] == key[2])
                    & (table["Method"] == key[3])]
        if hit.empty:
            return "", ""
        row = hit.iloc[0]
        return f"{row['relative']:+.1%} (p {row['p_corr']:.3f})", row["direction"] or "no"

    rows = []
    for key, runs in sorted(cells.items()):
        spec = runs["tuned"][0]
        facts = provenance.get(f"{spec.dataset}/{spec.split}/{spec.backbone}/{spec.method}", {})
        tuned_values, default_values = values(runs["tuned"]), values(runs["default"])
        d_gain, d_dir = gain(default, key)
        t_gain, t_dir = gain(tuned, key)
        verdict = "" if key[3] == suite.baseline or not (d_dir and t_dir) else (
            "unchanged" if d_dir == t_dir else f"{d_dir} -> {t_dir}")  # better / worse / no (not significant)
        rows.append({
            "Dataset": key[0], "Split": key[1], "Backbone": key[2], "Method": key[3],
            "Trials (pruned)": f"{facts.get('trials', '')} ({facts.get('pruned', '')})" if facts else "not tuned",
            "CPU-min": f"{float(facts['cpu_minutes']):.1f}" if facts.get("cpu_minutes") is not None else "",
            "Valid default": facts.get("default_value", ""), "Valid tuned": facts.get("best_value", ""),
            f"{metric} default": _mean_std(default_values), f"{metric} tuned": _mean_std(tuned_values),
            "Seeds (default / tuned)": f"{len(default_values)} / {len(tuned_values)}",
            "Gain vs baseline, default": d_gain, "Significant, default": d_dir,
            "Gain vs baseline, tuned": t_gain, "Significant, tuned": t_dir, "Verdict": verdict,
            "At range edge": ", ".join(facts.get("at_edge") or [])})
    return pd.DataFrame(rows)


def _mean_std(values: np.ndarray) -> str:
    if not len(values):
        return NOT_RUN
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def _extra_seed_cells(specs: list[RunSpec], seeds: set[int]) -> str:
    """"; extra seeds (bench run --extra-seeds): ml-100k/temporal_loo/sgl/random 3–9, ..." for the cells with runs
    at seeds beyond the suite's, "" when none."""
    extra: dict[str, list[int]] = {}
    for spec in specs:
        if spec.seed not in seeds:
            extra.setdefault(f"{spec.dataset}/{spec.split}/{spec.backbone}/{spec.method}", []).append(spec.seed)
    if not extra:
        return ""
    return "; extra seeds (`bench run --extra-seeds`): " + ", ".join(
        f"{cell} {min(v)}–{max(v)}" if len(v) > 1 else f"{cell} {v[0]}" for cell, v in extra.items())


def defined_cells(specs: list[RunSpec], store: ResultStore, labels: bool = True) -> list[tuple]:
    """The (dataset, split, backbone, method) cells the specs define, in spec order: as `collect` labels them
    (`labels`), or with the backbone and method ids (`paradigms_frame`'s rows). A table prints "not run" where
    one has no record, "n/a" where a cell is not one of them."""
    slabels = split_labels(specs)
    if not labels:
        return list(dict.fromkeys((s.dataset, slabels[s.run_id], s.backbone, s.method) for s in specs))
    blabels, mlabels = backbone_labels(specs), method_labels(specs, store)
    return list(dict.fromkeys((s.dataset, slabels[s.run_id], blabels[s.run_id], mlabels[s.run_id]) for s in specs))


def bold_note(scope: str) -> str:
    """What bold means in a Markdown table (`latex.leaders`)."""
    return (f"- **Bold**: the best {scope}, where it is significantly ahead of the next (primary test: the two-level "
            "bootstrap over seeds and users, p < 0.05, uncorrected: one question per column); a tie for best bolds "
            "every tied cell, down to the first cell the best is significantly ahead of; nothing is bold where no "
            "cell is significantly behind the best")


def scale_note() -> str:
    """What a cell's "(n=100)" / "(1 seed)" says."""
    return ("- (n=…) / (k seeds): a cell on other test users or seeds than most of its column (e.g. a reranker "
            "scoring a seeded sample of users, a cell with runs still to do)")


def segment_name_note(splits) -> str:
    """A segment a shown split names otherwise (longtail's cold users are its tail users), for the segments
    tables' headers, which name segments generically."""
    text = split_segment_note(splits)
    return f"- Segments named otherwise on a split: {text}" if text else ""


def _markdown_significance(table: pd.DataFrame, metric: str, baseline: str) -> pd.DataFrame:
    """The significance table with display names in its label columns and the metric / baseline headers."""
    out = display_table(table)
    return out.rename(columns={f"{metric} method": f"{display('metric', metric)} method",
                               f"{metric} {baseline}": f"{display('metric', metric)} {display('method', baseline)}"})


def write_tables(suite: Suite, specs: list[RunSpec], store: ResultStore, out_dir: Path,
                 formats=("markdown", "latex", "csv"), correction: str = "holm",
                 latex: LatexSelection | None = None) -> dict[str, Path]:
    """Render the suite's tables from its records into out_dir/<suite>/; returns written paths. The Markdown
    main table shows what the page-wide LaTeX shows (per split the metrics a paper prints, the paradigms
    table's longtail by its tail segments) with display names (`names.yaml`, keyed back to the ids under it);
    the CSV carries every metric and column, with the ids. The LaTeX tables (`bench.report.latex`) carry what
    `latex` selects, page-wide (`<name>.tex`) and / or column-wide (`<name>_column.tex`). Bold: the best where
    it is significantly ahead (`stats.LeadTest`); "not run" (a defined cell without a record) and "n/a" (no
    such cell) differ."""
    base_seeds = sorted({spec.seed for spec in specs})
    specs = with_stored_seeds(specs, store.has)  # seeds `bench run --extra-seeds` added to some cells
    for spec in specs:  # a record that exists but is not complete is named and skipped, never a crash
        problem = store.problem(spec.run_id)
        if problem not in (None, "no record"):
            print(f"bench: skipping {store.record_path(spec.run_id)}: {problem}", file=sys.stderr)
    frame = collect(specs, store)
    if frame.empty:
        return {}
    target = Path(out_dir) / suite.name
    baseline = suite.baseline
    collapsed = collapsed_runs(frame)
    lead_test = LeadTest(store)
    defined = defined_cells(specs, store)
    results = significance_results(specs, store, correction=correction, baseline=baseline)
    if not results.empty:  # a side whose cell holds a collapsed seed: marked in the significance tables
        hit = collapsed_cells(frame)
        results["collapsed_a"] = [k in hit for k in zip(results["Dataset"], results["Split"], results["Backbone"],
                                                        results["Method"])]
        results["collapsed_b"] = [(d, s, b, baseline) in hit for d, s, b in zip(results["Dataset"], results["Split"],
                                                                                 results["Backbone"])]
    significance = significance_table(specs, store, correction=correction, results=results, baseline=baseline)
    marks = significance_marks(results)
    intervals = {}
    pointwise = frame_protocol(frame) == "pointwise"  # the protocol the runs' method classes declare
    expected = set(defined)

    def absent(dataset, split, backbone, method) -> str:
        return NOT_RUN if (dataset, split, backbone, method) in expected else NA

    if pointwise:  # AUC / UAUC overall and per pair segment (the CTR tables)
        intervals = ctr_intervals(frame, store)
        main, segments = ctr_table(frame, intervals), ctr_segment_table(frame)
        md_segments = display_table(ctr_segment_table(frame, absent))
    else:
        main, segments = main_table(frame, significant=marks, baseline=baseline), segment_table(frame)
        md_segments = segment_table(frame, names=True)
    # the Markdown main table: the page-wide LaTeX main table's grid (its default metrics), as text
    grid, _, _ = main_grid(frame, "page", None, marks, defined=defined, lead_test=lead_test)
    md_main = grid_frame(grid)
    main_lines = [shots_note(grid.facts, latex=False), missing_note(grid.facts, latex=False)]
    scope = "per backbone" if grid.block_column else "per column"
    paradigms = None
    paradigm_defined = defined_cells(specs, store, labels=False)
    if suite.table == "paradigms" and not pointwise:
        paradigms = paradigms_frame(specs, store)
        main = paradigms_table(paradigms, significant=marks)
        md_main, grid = paradigms_markdown(paradigms, marks, defined=paradigm_defined, lead_test=lead_test)
        main_lines = [*paradigms_notes(grid, latex=False), missing_note(grid.facts, latex=False)]
        scope = "per column"
    main_lines = [f"- {line}" for line in main_lines if line]
    if grid.facts.get("bolded"):
        main_lines.append(bold_note(scope))
    if grid.facts.get("noted"):
        main_lines.append(scale_note())
    extra_tables = family_tables(specs, store)
    tuning = tuned_vs_default(suite, specs, store, results, correction) if not pointwise else pd.DataFrame()
    if not tuning.empty:
        extra_tables = {"tuned_vs_default": tuning, **extra_tables}
    catalogue = catalogue_table(frame)
    if not catalogue.empty:
        extra_tables = {"catalogue": catalogue, **extra_tables}
    examples = family_tables(specs, store, "examples")  # Markdown only
    used = sorted(frame["run_id"].unique())
    slabels = split_labels(specs)
    missing = [f"{s.dataset}/{slabels[s.run_id]}/{s.backbone}/{s.method}/seed{s.seed}" for s in specs
               if not store.has(s.run_id)]
    note = settings_note(suite, specs, base_seeds)
    if pointwise:
        note += "\n" + ctr_sample_note(frame, intervals)
        note += "".join(f"\n{line}" for line in cf_encoder_lines(frame))
    if not significance.empty:
        note += "\n" + significance_note(results, correction, baseline,
                                         what=f"`{suite.name}/significance.md` (one per row)")
    power = "\n".join(f"- {line}" for line in mde_lines(results, baseline=baseline))
    for extra in (cap_note(frame), collapse_note(collapsed), load_note(frame)):
        if extra:
            note += f"\n{extra}"
    sources = (f"{len(used)} run records (results/runs/<run_id>/record.json): " + ", ".join(used)
               + (f"\nNot run yet ({len(missing)}): " + ", ".join(missing) if missing else ""))
    # Markdown: display names, the lines each table needs, and the key from its names to the ids
    markdown = {"main": (md_main, main_lines + ["- Every metric, the gain over the baseline, seeds and costs: "
                                                "`main.csv` (ids, full width)"], grid.facts.get("used", {})),
                "segments": (md_segments, [segment_name_note(frame["split"])], table_used(segments)),
                "significance": (_markdown_significance(significance, "ndcg@10", baseline), [],
                                 {**table_used(significance), "method": [baseline, *table_used(significance).get(
                                     "method", [])]} if not significance.empty else {})}
    markdown |= {name: (display_table(table), [], table_used(table)) for name, table in extra_tables.items()}
    written = {}
    ext = {"markdown": "md", "latex": "tex", "csv": "csv"}
    for fmt in formats:
        if fmt == "latex":
            comment = note + (f"\n{power}" if power else "") + f"\nSources: {sources}"
            files = latex_files(suite, frame, results, marks, extra_tables, latex, comment, correction,
                                main_note=ctr_caption_note(frame, intervals) if intervals else "",
                                collapsed=collapsed, defined=defined, lead_test=lead_test)
            if paradigms is not None:
                files.update(paradigms_latex(suite, paradigms, marks, latex, comment, correction,
                                             family=len(results), defined=paradigm_defined, lead_test=lead_test))
            for filename, body in files.items():
                atomic_write_text(target / filename, body)
                written[filename] = target / filename
            continue
        for name, table in (("main", main), ("segments", segments), ("significance", significance),
                            *extra_tables.items()):
            if table.empty:
                continue
            path = target / f"{name}.{ext[fmt]}"
            marked = name == "significance" or (name == "main" and not pointwise)
            text = note + (f"\n{power}" if power and marked else "")
            if fmt == "markdown":
                shown, lines, keyed = markdown[name]
                # a table built from a grid keeps its cells as written (0.0500, not 0.05)
                body = render(shown, fmt, numparse=name not in ("main", "significance"))
                text += "".join(f"\n{line}" for line in lines if line)
                key = key_line(keyed)
                body = f"{body}\n\n{text}" + (f"\n\n{key}" if key else "") + f"\n\nSources: {sources}\n"
            else:
                body = render(table, fmt, numparse=name != "significance")
            atomic_write_text(path, body)
            written[f"{name}.{ext[fmt]}"] = path
    if "markdown" in formats or "csv" in formats:  # runs, cap-stopped, collapsed: counted from the records
        runs = convergence_frame(specs, store, frame)
        if "markdown" in formats:
            path = target / "convergence.md"
            atomic_write_text(path, convergence_markdown(suite.name, runs, expected=len(specs)))
            written["convergence.md"] = path
        if "csv" in formats:
            path = target / "convergence.csv"
            atomic_write_text(path, runs.to_csv(index=False))
            written["convergence.csv"] = path
    for name, table in examples.items() if "markdown" in formats else ():
        path = target / f"{name}.md"
        atomic_write_text(path, render(table, "markdown") + f"\n\nSources: {sources}\n")
        written[f"{name}.md"] = path
    return written
