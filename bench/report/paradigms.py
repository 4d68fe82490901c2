"""The cross-paradigm view: one row per paradigm on its natural backbone, one column group per split.

`paradigms_frame` reads one line per run (metrics, parameters, latency, offline LLM cost, the segment metrics
of the splits shown by their segments) from the records; `paradigms_table` (the CSV) prints seed means ± std
per (split, metric) with the directional significance marks (↑ / ↓) of the suite's tables and the cost
columns; `paradigms_grid` is what a paper prints (LaTeX `paradigms_latex`, Markdown `paradigms_markdown`): R@10
and N@10 per split, the long-tail split by its tail users and tail items (its overall numbers are
temporal_loo's), how a row scores unseen items and the costs, with display names; `tradeoff_data` feeds the
NDCG@10-vs-latency figure (`bench.report.figures.tradeoff_figure`). A row's paradigm and the row order come
from `names.yaml` (`labels.paradigm_of`). Nothing here trains or scores: every number comes from a record.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.records import ResultStore
from bench.report.convergence import COLLAPSE_MARK, capped_components, collapsed_runs, flagged, mark_collapsed
from bench.report.labels import (
    LOAD_MARK,
    NA,
    NOT_RUN,
    display,
    display_label,
    escape,
    latency_cell,
    latency_loaded,
    method_protocol,
    metric_label,
    paradigm_of,
    paradigm_order,
    segment_name,
    split_labels,
)
from bench.report.latex import (
    Grid,
    Text,
    _lines,
    caption_parts,
    cell_note,
    collapsed_notes,
    column_leaders,
    detail_note,
    float_env,
    grid_frame,
    joined_notes,
    label_for,
    missing_cell,
    missing_note,
    narrow_note,
    result_caption,
    stack,
    table_scale,
    tabulars,
    tex_head,
    title_text,
    value_cell,
)
from bench.report.stats import as_directions, mark
from bench.spec import RunSpec

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
PAGE_METRICS = ("recall@10", "ndcg@10")  # what a paper prints beside five splits and the cost columns
SHORT = {"recall": "R", "ndcg": "N", "hit": "H", "mrr": "MRR"}
# how a row scores an item without training interactions (bench.method.COLD_ITEM_SOURCES), as the CSV prints it
UNSEEN_ITEMS = {"id": "ID row: init only", "text-init": "text-init row", "text": "from text"}
# a split whose overall numbers answer another split's question is shown by its segments: longtail is temporal
# leave-one-out (its overall = temporal_loo's), its question the tail users and tail items
SPLIT_SEGMENTS = {"longtail": ("user:cold", "item:tail")}
# the segment metrics the frame keeps per run (`segment|metric` columns), for the splits shown by segments
SEGMENT_COLUMNS = tuple(dict.fromkeys(seg for segs in SPLIT_SEGMENTS.values() for seg in segs))
# the paradigms' row order, from names.yaml (the figures read it too)
PARADIGM_ORDER = paradigm_order()


def offline_llm_cost(record: dict) -> tuple[float, float]:
    """(tokens, seconds) the run's LLM stages cost offline, the first time they were built (cached stages report
    what building them cost, not the cache read), as its method family reads its record
    (`Method.recorded_offline_cost`: LLM2Rec's stage training, PtE's profile generation, a Yes / No model's LoRA
    training); NaN where no LLM ran or the method is unknown."""
    from bench.catalog import METHODS

    try:
        cls = METHODS.get((record.get("spec") or {}).get("method"))
    except Exception:  # a record of a method since removed
        return math.nan, math.nan
    return cls.recorded_offline_cost(record)


def paradigms_frame(specs: list[RunSpec], store: ResultStore, metrics=METRICS) -> pd.DataFrame:
    """One row per stored run: split, backbone, method, paradigm, seed, overall metrics, parameters,
    median per-user latency, offline LLM cost, whether a trained component stopped at its cap and whether
    the run is a collapsed seed of its cell (`bench.report.convergence`), the protocol its method class
    declares, and the metrics and users of the segments a split is shown by (`SPLIT_SEGMENTS`) as
    `segment|metric` columns."""
    slabels = split_labels(specs)
    rows = []
    for spec in specs:
        if not store.has(spec.run_id):
            continue
        record = store.load(spec.run_id)
        overall = record["metrics"]["overall"]
        params = record["params"]
        tokens, seconds = offline_llm_cost(record)
        capped = capped_components(record)
        segments = {f"{segment}|{key}": float(value) for segment in SEGMENT_COLUMNS
                    for key, value in (record["metrics"].get(segment) or {}).items()
                    if key in (*metrics, "n_users") and value is not None}
        rows.append({"run_id": spec.run_id, "dataset": spec.dataset, "split": slabels[spec.run_id],
                     "backbone": spec.backbone, "method": spec.method, "paradigm": paradigm_of(spec.method),
                     "seed": spec.seed, **{m: float(overall[m]) for m in metrics},
                     "trainable": int(params["trainable"]), "frozen_online": int(params.get("frozen_online", 0)),
                     "frozen_offline": int(params.get("frozen_offline", 0)),
                     "latency_ms": float(record["latency"]["median_ms"]), "llm_tokens": tokens,
                     "llm_seconds": seconds, "capped": bool(capped), "capped_parts": ", ".join(c.name for c in capped),
                     "latency_loaded": latency_loaded(record), "protocol": method_protocol(spec.method),
                     "n_users": int(overall.get("n_users", 0)),
                     "sampled": bool((record.get("evaluation") or {}).get("test_user_sample")),
                     "unseen_items": (record.get("evaluation") or {}).get("item_cold_start"), **segments})
    return mark_collapsed(pd.DataFrame(rows))


def _count(value: float, compact: bool = False) -> str:
    """1234567 -> 1.23M (`compact`, for LaTeX: 3 significant digits, 249340 -> 249k); 0 -> 0; NaN -> —."""
    if value != value:
        return "—"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}" if compact else f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def _ms(value: float) -> str:
    """Milliseconds for a LaTeX cell: one decimal below 10, whole (thousands separated) above."""
    return "—" if value != value else f"{value:.1f}" if value < 10 else f"{value:,.0f}"


def _order(frame: pd.DataFrame, defined=()) -> list[tuple[str, str, str]]:
    """The rows (paradigm, backbone, method) of the stored runs and of the `defined` (dataset, split, backbone,
    method) cells, in the paradigm order of `names.yaml`, then backbone and method."""
    keys = list(frame[["paradigm", "backbone", "method"]].drop_duplicates().itertuples(index=False, name=None)) \
        if len(frame) else []
    keys += [(paradigm_of(m), b, m) for _, _, b, m in defined]
    rank = {p: i for i, p in enumerate(paradigm_order())}
    return sorted(dict.fromkeys(keys), key=lambda k: (rank.get(k[0], len(rank)), k[1], k[2]))


def paradigms_table(frame: pd.DataFrame, significant: dict[tuple, str] | set[tuple] | None = None, metrics=METRICS,
                    tested_metric: str = "ndcg@10", cap_mark: str = "‡") -> pd.DataFrame:
    """Rows (paradigm, backbone, method); per (dataset/split, metric): mean ± std over seeds, ↑ / ↓ where
    `significant` maps the (dataset, split, backbone, method) key to "better" / "worse" (a set: better), ‡ where
    a run stopped at its cap, ◊ where a seed collapsed (`bench.report.convergence`), — where
    the method does not run on that split; then parameters, latency and offline LLM cost (medians over
    the method's runs)."""
    significant = as_directions(significant)
    splits = list(dict.fromkeys(zip(frame["dataset"], frame["split"])))
    rows = []
    for paradigm, backbone, method in _order(frame):
        runs = frame[(frame["paradigm"] == paradigm) & (frame["backbone"] == backbone) & (frame["method"] == method)]
        row = {"Paradigm": paradigm, "Backbone": backbone, "Method": method}
        for dataset, split in splits:
            cell = runs[(runs["dataset"] == dataset) & (runs["split"] == split)]
            for metric in metrics:
                name, k = metric.split("@")
                column = f"{split} {SHORT.get(name, name)}@{k}"
                if cell.empty:
                    row[column] = "—"
                    continue
                values = cell[metric]
                text = f"{values.mean():.4f}" + (f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else "")
                verdict = significant.get((dataset, split, backbone, method), "") if metric == tested_metric else ""
                if verdict:
                    text += f" {mark(verdict)}"
                if cell["capped"].any():
                    text += f" {cap_mark}"
                if flagged(cell, "collapsed"):
                    text += f" {COLLAPSE_MARK}"
                if cell["sampled"].any():  # a seeded sample of the test users (a reranker on CPU)
                    text += f" (n={int(cell['n_users'].max())})"
                row[column] = text
        sources = runs["unseen_items"].dropna()
        row["Unseen items"] = UNSEEN_ITEMS.get(sources.iloc[0], sources.iloc[0]) if len(sources) else "—"
        row["Trainable"] = _count(runs["trainable"].median())
        row["Frozen online"] = _count(runs["frozen_online"].median())
        row["Frozen offline"] = _count(runs["frozen_offline"].median())
        row["Latency ms/user"] = latency_cell(runs)
        row["LLM tokens (offline)"] = _count(runs["llm_tokens"].max())
        seconds = runs["llm_seconds"].max()
        row["LLM s (offline)"] = "—" if seconds != seconds else f"{seconds:.0f}"
        rows.append(row)
    return pd.DataFrame(rows)


def tradeoff_data(frame: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """Per (split, paradigm, backbone, method): the metric's mean and std over seeds, the median per-user
    latency (ms) and whether a run was timed on a loaded machine, for the quality / latency figure."""
    if frame.empty:
        return pd.DataFrame()
    frame = frame.assign(latency_loaded=frame["latency_loaded"] if "latency_loaded" in frame else False)
    grouped = frame.groupby(["split", "paradigm", "backbone", "method"], sort=False)
    out = grouped.agg(mean=(metric, "mean"), std=(metric, lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0),
                      latency_ms=("latency_ms", "median"), seeds=("seed", "nunique"),
                      loaded=("latency_loaded", "any")).reset_index()
    return out


def _segment_view(cell: pd.DataFrame, segment: str, metrics) -> pd.DataFrame:
    """A cell's runs with a segment's metrics and users in the plain metric columns (the frame keeps them as
    `segment|metric`), so that a segment column is set, noted and tested as an overall one; without the
    segment's values (a record without that segment) the metrics are absent (n/a)."""
    if segment == "overall":
        return cell
    names = {f"{segment}|{m}": m for m in (*metrics, "n_users")}
    return cell.drop(columns=[m for m in names.values() if m in cell.columns]).rename(columns=names)


def _segments(split: str) -> tuple[str, ...]:
    """The segments a split's columns show (`SPLIT_SEGMENTS`; overall for the others)."""
    return SPLIT_SEGMENTS.get(split.split(" [")[0], ("overall",))


def _cost_cells(runs: pd.DataFrame, missing, facts: dict) -> list:
    """A row's unseen-item source and cost cells (trainable parameters, median ms per user, offline LLM tokens);
    `missing` (a row without a stored run): the cell for each."""
    if runs.empty:
        return [missing] * 4
    sources = runs["unseen_items"].dropna()
    unseen = display("unseen_items", sources.iloc[0]) if len(sources) else None
    loaded = bool(runs["latency_loaded"].any())
    facts["loaded"] = facts.get("loaded", False) or loaded
    facts.setdefault("unseen", set()).update([unseen] if unseen else [])
    ms = _ms(runs["latency_ms"].median())
    tokens = runs["llm_tokens"].max()
    trainable = _count(runs["trainable"].median(), compact=True)
    return [Text(escape(unseen), unseen) if unseen else missing_cell(NA, facts), Text(trainable, trainable),
            Text(ms + ("$^{*}$" if loaded else ""), ms + (f" {LOAD_MARK}" if loaded else "")),
            missing_cell(NA, facts) if tokens != tokens else Text(_count(tokens, compact=True),
                                                                  _count(tokens, compact=True))]


def paradigms_grid(frame: pd.DataFrame, metrics=METRICS, significant: dict[tuple, str] | set[tuple] | None = None,
                   tested_metric: str = "ndcg@10", show_std: bool = True, costs: bool = True,
                   narrow: bool = False, defined=None, lead_test=None) -> Grid:
    """The paradigms table's grid (LaTeX, and the Markdown table: `paradigms_markdown`): rows (paradigm,
    backbone, method) of the stored runs and of the `defined` (dataset, split, backbone, method) cells, a column
    group per split with the metrics beneath (a split in `SPLIT_SEGMENTS` by its segments: longtail's tail users
    and tail items), then with `costs` how a row scores unseen items and the cost columns. Bold per column over
    all rows (`leaders`, tested by `lead_test`): the table exists to compare paradigms with each other. A cell
    the suite defines without a record prints "not run", one it does not define "n/a"; a cell on other users or
    seeds than its column's says so. `narrow` (column-wide): split names broken into lines, a row labelled
    paradigm over backbone, without the method, where that pair names one method."""
    significant = as_directions(significant)
    defined = list(dict.fromkeys(defined or ()))
    stored = list(zip(frame["dataset"], frame["split"])) if len(frame) else []
    splits = list(dict.fromkeys([*stored, *(k[:2] for k in defined)]))
    keys = _order(frame, defined)
    cells = dict(iter(frame.groupby(["paradigm", "backbone", "method", "dataset", "split"], sort=False))) \
        if len(frame) else {}
    expected = {(paradigm_of(m), b, m, d, s) for d, s, b, m in defined}
    columns = [(d, s, seg, m) for d, s in splits for seg in _segments(s) for m in metrics]
    views = {(k, seg): _segment_view(cell, seg, metrics) for k, cell in cells.items() for seg in _segments(k[4])}
    seeds, users = table_scale(((k[0][3:] + (k[1],), view) for k, view in views.items()))
    one = len({d for d, _ in splits}) == 1
    facts = {"sig": False, "cap": False, "seeds": set(), "std": False, "segments": ("overall",),
             "dataset": splits[0][0] if one and splits else None, "split": None, "lone": None, "keys": keys,
             "bold": lead_test is not None, "table_seeds": seeds,
             "used": {"split": [s.split(" ")[0] for _, s in splits], "backbone": [k[1] for k in keys],
                      "method": [k[2] for k in keys],
                      "segment": [(seg, s) for _, s in splits for seg in _segments(s) if seg != "overall"]}}

    def view(key, column):
        cell = views.get((key + column[:2], column[2]))
        return None if cell is None or column[3] not in cell or cell[column[3]].isna().all() else cell

    grid_cells = [[view(k, c) for c in columns] for k in keys]
    printed = [[None if cell is None else float(f"{cell[c[3]].mean():.4f}") for cell, c in zip(row, columns)]
               for row in grid_cells]
    bold = [column_leaders([row[j] for row in grid_cells], [row[j] for row in printed], c[3], c[2], lead_test)
            for j, c in enumerate(columns)]
    short_labels = narrow and len({k[:2] for k in keys}) == len(keys)
    rows = []
    for r, key in enumerate(keys):
        paradigm, backbone, method = key
        shown_backbone, shown_method = display_label("backbone", backbone), display_label("method", method)
        label = (stack(escape(paradigm), escape(shown_backbone), "l") if short_labels
                 else stack(rf"{escape(paradigm)} ({escape(shown_backbone)})", escape(shown_method), "l"))
        out = [Text(label, f"{paradigm} ({shown_backbone}) {shown_method}")]
        for j, (dataset, split, segment, metric) in enumerate(columns):
            cell = grid_cells[r][j]
            if cell is None:
                absent = key + (dataset, split) in expected and key + (dataset, split) not in cells
                out.append(missing_cell(NOT_RUN if absent else NA, facts))
                continue
            marked = (significant.get((dataset, split, backbone, method), "")
                      if metric == tested_metric and segment == "overall" else "")
            note = cell_note(cell, seeds, users.get((dataset, split, segment)))
            out.append(value_cell(cell, metric, r in bold[j], marked, show_std, facts, note))
        if costs:
            runs = frame[(frame["paradigm"] == paradigm) & (frame["backbone"] == backbone)
                         & (frame["method"] == method)] if len(frame) else frame
            none = missing_cell(NOT_RUN if any(k[:3] == key for k in expected) else NA, facts) if runs.empty else None
            out += _cost_cells(runs, none, facts)
        rows.append(out)
    # a split's setting suffix (`Cold items [cold candidates]`) goes beneath its name, so it never widens its group
    titles = [display_label("split", s) if one else f"{d}/{display_label('split', s)}" for d, s in splits]
    groups = []
    for title, (_, split) in zip(titles, splits):
        subs = []
        for segment in _segments(split):
            for metric in metrics:
                if segment == "overall":
                    subs.append(Text(metric_label(metric), display("metric", metric)))
                else:
                    name = segment_name(segment, split)
                    head = (_lines([*map(escape, name.split(" ")), metric_label(metric)]) if narrow
                            else stack(escape(name), metric_label(metric)))
                    subs.append(Text(head, f"{name} {display('metric', metric)}"))
        groups.append((title_text(title, narrow), subs))
    if narrow:
        facts["narrow_note"] = narrow_note(titles)
    if costs:
        groups.append(("", [Text(_lines(["Unseen", "items"]), "Unseen items")]))
        groups.append((Text("Cost", "Cost"), [Text("Train.", "Trainable"), Text("ms/user", "ms/user"),
                                              Text("LLM tok.", "LLM tokens (offline)")]))
    label = stack("Paradigm", "backbone", "l") if short_labels else stack("Paradigm (backbone)", "method", "l")
    return Grid([Text(label, "Paradigm (backbone) method")], groups, [("", rows)], None, facts=facts)


def paradigms_notes(grid: Grid, latex: bool = True) -> list[str]:
    """What the paradigms table's own columns mean, one sentence each (LaTeX or plain): the segments a split
    is shown by, how a row scores unseen items, the cost columns, the loaded-machine mark."""
    lines = []
    for split, segments in SPLIT_SEGMENTS.items():
        if any(s == split for s in grid.facts["used"]["split"]):
            names = " and ".join(segment_name(segment, split) for segment in segments)
            lines.append(f"{display('split', split)}: its {names} (the LLM-ESR segments); its overall numbers are "
                         f"{display('split', 'temporal_loo')}'s (the same temporal leave-one-out)")
    if grid.facts.get("unseen"):
        legend = {display("unseen_items", key): text for key, text in (
            ("id", "its ID embedding as initialised (random), never trained"),
            ("text-init", "its text-initialised embedding, never updated by training"),
            ("text", "computed from its text when scored"))}
        lines.append("Unseen items: how a row scores an item without training interactions: " + "; ".join(
            f"{name} = {text}" for name, text in legend.items() if name in grid.facts["unseen"]))
    if any(str(title) == "Cost" for title, _ in grid.groups):
        lines.append("Cost: trainable parameters, median ms to score one user, LLM tokens spent offline (first "
                     "build)" + ("; * timed on a loaded machine (other jobs sharing the CPU): an upper bound"
                                 if grid.facts.get("loaded") else ""))
    if not latex:
        return lines
    text = [escape(line[:1].upper() + line[1:]) + "." for line in lines]
    return [t.replace(r"; * timed", r"; $^{*}$ timed") for t in text]


def paradigms_markdown(frame: pd.DataFrame, significant=None, tested_metric: str = "ndcg@10", defined=None,
                       lead_test=None) -> tuple[pd.DataFrame, Grid]:
    """The Markdown paradigms table: the page-wide LaTeX table's grid (`paradigms_grid`: R@10 and N@10 per
    split, longtail by its tail segments, unseen items and costs), its label column as Paradigm / Backbone /
    Method; the full width (every metric of every split, overall) is the CSV's (`paradigms_table`)."""
    grid = paradigms_grid(frame, PAGE_METRICS, significant, tested_metric, show_std=True, costs=True,
                          defined=defined, lead_test=lead_test)
    table = grid_frame(grid).iloc[:, 1:]
    labels = pd.DataFrame([(p, display_label("backbone", b), display_label("method", m))
                           for p, b, m in grid.facts["keys"]], columns=["Paradigm", "Backbone", "Method"])
    return pd.concat([labels, table.reset_index(drop=True)], axis=1), grid


def paradigms_latex(suite, frame: pd.DataFrame, significant: dict[tuple, str] | set[tuple], selection=None,
                    comment: str = "", correction: str = "holm", tested_metric: str = "ndcg@10",
                    family: int = 0, defined=None, lead_test=None) -> dict[str, str]:
    """`main.tex` (page-wide: R@10 and N@10 per split with their std, longtail by its tail users and tail
    items, how a row scores unseen items, the cost columns) and `main_column.tex` (column-wide: N@10 per split,
    means only) of a paradigms suite, replacing the grid layout's main table; `--metrics` chooses others (the
    CSV carries every metric). Wider than its measure, a grid is set as stacked tabulars (`tabulars`)."""
    selection_metrics = getattr(selection, "metrics", None)
    widths = getattr(selection, "widths", None) or ("page", "column")
    files = {}
    for width in widths:
        page = width == "page"
        metrics = tuple(selection_metrics or (PAGE_METRICS if page else (tested_metric,)))
        grid = paradigms_grid(frame, metrics, significant, tested_metric, show_std=page, costs=page,
                              narrow=not page, defined=defined, lead_test=lead_test)
        lead, detail = caption_parts(suite.description or suite.name, 160 if page else 110)
        caption = result_caption(lead, grid, metrics, ("overall",), suite.baseline, correction, tested_metric,
                                 family=family)
        if grid.facts.get("narrow_note"):
            caption += f" Split settings: {grid.facts['narrow_note']}."
        notes = joined_notes(detail_note(detail), *paradigms_notes(grid), missing_note(grid.facts),
                             collapsed_notes(grid, collapsed_runs(frame)))
        files["main.tex" if page else "main_column.tex"] = tex_head(comment, grid.facts["used"]) + float_env(
            tabulars(grid, width), caption, label_for(suite.name, "main", width), width,
            colsep="2pt" if page else "3pt", notes=notes)
    return files
