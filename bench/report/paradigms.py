"""The cross-paradigm view: one row per paradigm on its natural backbone, one column group per split.

`paradigms_frame` reads one line per run (metrics, parameters, latency, offline LLM cost) from the records;
`paradigms_table` prints seed means ± std per (split, metric) with the directional significance marks
(↑ / ↓) of the suite's tables and the cost columns; `tradeoff_data` feeds the NDCG@10-vs-latency figure
(`bench.report.figures.tradeoff_figure`). Nothing here trains or scores: every number comes from a record.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.records import ResultStore
from bench.report.convergence import COLLAPSE_MARK, capped_components, collapsed_runs, flagged, mark_collapsed
from bench.report.labels import (
    escape,
    latency_cell,
    latency_loaded,
    method_protocol,
    metric_label,
    split_labels,
)
from bench.report.latex import (
    PACKAGES,
    Grid,
    collapsed_notes,
    float_env,
    label_for,
    narrow_note,
    rank_marks,
    result_caption,
    shorten,
    split_title,
    stack,
    tabular,
    value_cell,
)
from bench.report.stats import as_directions, mark
from bench.spec import RunSpec

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
PAGE_METRICS = ("recall@10", "ndcg@10")  # what fits a page beside five splits and the cost columns
SHORT = {"recall": "R", "ndcg": "N", "hit": "H", "mrr": "MRR"}
# how a row scores an item without training interactions (bench.method.COLD_ITEM_SOURCES), as printed
UNSEEN_ITEMS = {"id": "ID row: init only", "text-init": "text-init row", "text": "from text"}
# row order: ID baselines first, then the four paradigms as the papers introduce them
PARADIGM_ORDER = ("ID", "LLMInit", "CoLLM", "TALLRec", "ICL", "LLM2Rec", "PtE")


def paradigm_of(method: str) -> str:
    """The paradigm a registry entry belongs to (its family; the Yes/No family split by entry)."""
    from bench.catalog import METHODS

    family = METHODS.family(method)
    if family == "collm":
        for prefix, label in (("tallrec", "TALLRec"), ("icl", "ICL")):
            if method.startswith(prefix):
                return label
        return "CoLLM"
    return {"classic": "ID", "llminit": "LLMInit", "llm2rec": "LLM2Rec", "pte": "PtE"}.get(family, family)


def offline_llm_cost(record: dict) -> tuple[float, float]:
    """(tokens, seconds) the run's LLM stages cost offline, the first time they were built (cached stages
    report what building them cost, not the cache read): LLM2Rec's stage training, PtE's profile
    generation, a Yes/No model's LoRA training (`offline_cost` in its facts); NaN where no LLM ran."""
    info = record.get("method_info") or {}
    if "llm2rec" in info:
        stage = info["llm2rec"]
        return float(stage.get("llm_tokens_seen") or 0), float(stage.get("llm_train_seconds") or 0)
    cost = (info.get("pte") or {}).get("offline_cost")
    if cost:
        tokens = cost.get("first_tokens") or cost.get("tokens") or 0
        seconds = cost.get("first_seconds") or cost.get("seconds") or 0
        return float(tokens), float(seconds)
    for value in (info, *info.values()):
        if isinstance(value, dict) and isinstance(value.get("offline_cost"), dict):
            cost = value["offline_cost"]
            return float(cost.get("tokens", math.nan)), float(cost.get("seconds", math.nan))
    return math.nan, math.nan


def paradigms_frame(specs: list[RunSpec], store: ResultStore, metrics=METRICS) -> pd.DataFrame:
    """One row per stored run: split, backbone, method, paradigm, seed, overall metrics, parameters,
    median per-user latency, offline LLM cost, whether a trained component stopped at its cap and whether
    the run is a collapsed seed of its cell (`bench.report.convergence`) and the protocol its method class
    declares."""
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
                     "unseen_items": (record.get("evaluation") or {}).get("item_cold_start")})
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


def _order(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    keys = frame[["paradigm", "backbone", "method"]].drop_duplicates().itertuples(index=False, name=None)
    rank = {p: i for i, p in enumerate(PARADIGM_ORDER)}
    return sorted(keys, key=lambda k: (rank.get(k[0], len(rank)), k[1], k[2]))


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


def paradigms_grid(frame: pd.DataFrame, metrics=METRICS, significant: dict[tuple, str] | set[tuple] | None = None,
                   tested_metric: str = "ndcg@10", show_std: bool = True, costs: bool = True,
                   narrow: bool = False):
    """The LaTeX grid of the paradigms table: rows (paradigm, backbone), a column group per split with the
    metrics beneath, then the cost columns. Best / second are marked per column over all rows: the table
    exists to compare paradigms with each other. `narrow` (column-wide): split names broken at their
    underscores with their settings' values only (`facts["narrow_note"]` keys them), and a row is labelled
    paradigm over backbone, without the method, where that pair names one method."""
    significant = as_directions(significant)
    splits = list(dict.fromkeys(zip(frame["dataset"], frame["split"])))
    keys = _order(frame)
    cells = dict(iter(frame.groupby(["paradigm", "backbone", "method", "dataset", "split"], sort=False)))
    columns = [(d, s, m) for d, s in splits for m in metrics]
    printed = [[None if (k + c[:2]) not in cells else float(f"{cells[k + c[:2]][c[2]].mean():.4f}")
                for c in columns] for k in keys]
    marks = [rank_marks(list(col)) for col in zip(*printed)]
    facts = {"sig": False, "cap": False, "seeds": set(), "std": False, "segments": ("overall",),
             "dataset": splits[0][0] if len({d for d, _ in splits}) == 1 else None, "split": None, "lone": None}
    rows = []
    short_labels = narrow and len({k[:2] for k in keys}) == len(keys)
    for r, key in enumerate(keys):
        paradigm, backbone, method = key
        out = [stack(escape(paradigm), escape(backbone), "l") if short_labels
               else stack(rf"{escape(paradigm)} ({escape(backbone)})", escape(method), "l")]
        for j, (dataset, split, metric) in enumerate(columns):
            cell = cells.get(key + (dataset, split))
            if cell is None:
                out.append("--")
                continue
            marked = significant.get((dataset, split, backbone, method), "") if metric == tested_metric else ""
            out.append(value_cell(cell, metric, marks[j][r], marked, show_std, facts))
        if costs:
            runs = frame[(frame["paradigm"] == paradigm) & (frame["backbone"] == backbone) & (frame["method"] == method)]
            loaded = bool(runs["latency_loaded"].any())
            facts["loaded"] = facts.get("loaded", False) or loaded
            out += [_count(runs["trainable"].median(), compact=True),
                    _ms(runs["latency_ms"].median()) + ("$^{*}$" if loaded else ""),
                    _count(runs["llm_tokens"].max(), compact=True)]
        rows.append(out)
    one_dataset = facts["dataset"] is not None
    # a split's setting suffix (`cold_items [candidates=cold]`) goes beneath its name, so it never widens
    # its column group
    titles = [s if one_dataset else f"{d}/{s}" for d, s in splits]
    groups = [(split_title(t, narrow), [metric_label(m) for m in metrics]) for t in titles]
    if narrow:
        facts["narrow_note"] = narrow_note(titles)
    if costs:
        groups.append(("Cost", ["Train.", "ms/user", "LLM tok."]))
    label = stack("Paradigm", "backbone", "l") if short_labels else stack("Paradigm (backbone)", "method", "l")
    return Grid([label], groups, [("", rows)], None, facts=facts)


def paradigms_latex(suite, frame: pd.DataFrame, significant: dict[tuple, str] | set[tuple], selection=None,
                    comment: str = "", correction: str = "holm", tested_metric: str = "ndcg@10",
                    family: int = 0) -> dict[str, str]:
    """`main.tex` (page-wide: R@10 and N@10 per split with their std, the cost columns) and `main_column.tex`
    (column-wide: N@10 per split, means only) of a paradigms suite, replacing the grid layout's main table;
    `--metrics` chooses others (the Markdown and CSV tables carry every metric)."""
    selection_metrics = getattr(selection, "metrics", None)
    widths = getattr(selection, "widths", None) or ("page", "column")
    head = ("% " + comment.replace("\n", "\n% ") + "\n" if comment else "") + (
        f"% Needs \\usepackage{{{','.join(PACKAGES)}}}\n")
    files = {}
    for width in widths:
        page = width == "page"
        metrics = tuple(selection_metrics or (PAGE_METRICS if page else (tested_metric,)))
        grid = paradigms_grid(frame, metrics, significant, tested_metric, show_std=page, costs=page,
                              narrow=not page)
        lead = shorten(suite.description or suite.name, 160 if page else 110)
        caption = result_caption(lead, grid, metrics, ("overall",), suite.baseline, correction, tested_metric,
                                 family=family)
        if grid.facts.get("narrow_note"):
            caption += f" Split settings: {grid.facts['narrow_note']}."
        if page:
            caption += (" Cost: trainable parameters, median ms to score one user, LLM tokens spent offline "
                        "(first build).")
            if grid.facts.get("loaded"):
                caption += " $^{*}$ timed on a loaded machine (other jobs sharing the CPU): an upper bound."
        files["main.tex" if page else "main_column.tex"] = head + float_env(
            tabular(grid), caption, label_for(suite.name, "main", width), width,
            colsep="2pt" if page else "3pt", notes=collapsed_notes(grid, collapsed_runs(frame)))  # page: 23 columns
    return files
