"""Figures from stored run records (matplotlib, PNG and PDF, into results/figures/), each drawn from the runs of
one suite's table and read through the functions that table is built with, so a figure never shows a method,
a value or a mark its table does not:

- `collapse` (the `collapse` suite's table): the metric against the CF embedding size (LightGCN,
  temporal_loo): one marker per seed (run), a line through the mean over seeds, a ±1 std band where a size
  has several seeds; LLMInit-full at its encoder's dimension. The y axis starts at 0.
- `coldstart_gain` (the `coldstart` table): the relative gain of each method over the suite's baseline
  (`random`) per backbone, one panel per split: exactly the table's rows, each bar its `gain` cell
  (mean over seeds / the baseline's mean − 1, from the results frame), the baseline's mean beneath its
  backbone; the 95% two-level bootstrap interval and the ↑ / ↓ of `significance_results` (the table's
  significance family and marks); ‡ / ◊ where the table marks a cap-stopped / collapsed cell.
- `activity` (the `coldstart` table's rows that names.yaml's `figures.activity` names): the metric by user-activity
  bucket (training interactions of the test user, from the split the record names, recomputed from the
  cache and checked against the record's split hash), from each run's per-user values.
- `tradeoff` (the `paradigms` table): the metric (mean ± std over seeds, the table's cell) against the
  row's latency cell as the table prints it (median over the row's runs, `latency_cell`; hollow and `*`:
  timed on a loaded machine, as the table marks it), one marker per paradigm, one colour per split, one
  label per table row placed without collisions (`bench.report.figure_labels`).

Rendering is deterministic: fixed rcParams (matplotlib's default style, whatever the user's matplotlibrc
says), no dates in the files (PNG without `Software`, PDF without `CreationDate`). A figure whose runs are
missing is skipped with a message.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from bench.records import ResultStore
from bench.report.convergence import cell_marks
from bench.report.frame import results_frame
from bench.report.labels import CAP_MARK, COLLAPSE_MARK, LOAD_MARK, latency_cell, names
from bench.report.stats import BETTER_MARK, WORSE_MARK, family_text
from bench.selection import pair
from bench.spec import RunSpec

# `tuning` (the optimisation history of `bench tune`'s studies) is drawn by bench.report.tuning_figures, which
# builds on this module's style: `bench figures` calls it
FIGURES = ("collapse", "coldstart_gain", "activity", "tradeoff", "tuning")
SUITES = {"collapse": "collapse", "coldstart_gain": "coldstart", "activity": "coldstart", "tradeoff": "paradigms"}
ACTIVITY_BINS = (1, 4, 8, 16, 32, 64, 128, 10**9)
DPI = 150
# on top of matplotlib's default style: the figure's own dpi is the saved one, so the label boxes measured
# while placing are the pixels written
RC = {"figure.dpi": DPI, "savefig.dpi": DPI, "font.family": ["DejaVu Sans"], "svg.hashsalt": "bench-figures",
      "pdf.compression": 6}
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None}}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def style():
    """Matplotlib's default style plus `RC`, whatever rcParams the process or a matplotlibrc set."""
    plt = _plt()
    with plt.style.context("default"), plt.rc_context(RC):
        yield plt


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        tmp = out_dir / f".{name}.tmp.{ext}"
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", metadata=METADATA[ext])
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file
        paths.append(path)
    _plt().close(fig)
    return paths


def _caption(fig, text: str, fontsize: float = 7) -> None:
    """A caption under everything the axes draw (tick labels and axis labels included), at the left edge."""
    renderer = fig.canvas.get_renderer()
    bottom = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes)
    gap = 4 * fig.dpi / 72  # 4 points
    fig.text(0.01, (bottom - gap) / fig.bbox.height, text, fontsize=fontsize, va="top")


def suite_specs(name: str, store: ResultStore, profile: str | None = None) -> list[RunSpec]:
    """The specs a suite's tables are built from: its expanded grid plus the seeds `--extra-seeds` stored."""
    from bench.spec import expand, load_suite, with_stored_seeds

    return with_stored_seeds(expand(load_suite(name, profile)), store.has)


def _overall(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The results frame's overall rows of one metric: one row per run."""
    return frame[(frame["segment"] == "overall") & (frame["metric"] == metric)]


# --- collapse -------------------------------------------------------------------------------------------

def _figure_config(name: str) -> dict:
    """The figure's part of `figures` in bench/report/names.yaml (which rows it draws, their styles)."""
    return dict((names().get("figures") or {}).get(name) or {})


COLLAPSE_STYLES = {method: tuple(style) for method, style in _figure_config("collapse_styles").items()}


def collapse_data(store: ResultStore, specs: list[RunSpec], metric: str = "ndcg@10") -> pd.DataFrame:
    """Rows (dataset, split, backbone, method, label, encoder, size, seed, value, run_id): the overall `metric`
    of each run of `specs` in the results frame (the collapse table's cells), `size` the embedding width the
    run trained at (its record's `effective_embedding_size`: a full-width text table trains at its encoder's
    dimension, as the table's `runs at d=` says). Only the first
    (dataset, split, backbone) of the frame: a sweep is one context."""
    frame = _overall(results_frame(store, specs), metric)
    if frame.empty:
        return pd.DataFrame()
    first = frame.iloc[0]
    context = (frame["dataset"] == first["dataset"]) & (frame["split_label"] == first["split_label"]) & (
        frame["backbone"] == first["backbone"])
    if not context.all():
        print(f"figures: collapse: only {first['dataset']}/{first['split_label']}/{first['backbone']} drawn "
              f"({int((~context).sum())} other runs left out)")
    by_id = {spec.run_id: spec for spec in specs}
    rows = []
    for row in frame[context].itertuples(index=False):
        spec = by_id[row.run_id]
        size = spec.backbone_settings["embedding_size"]
        info = store.load(row.run_id).get("method_info", {})
        effective = info.get("effective_embedding_size")  # every method records the width it trained at
        rows.append({"dataset": row.dataset, "split": row.split_label, "backbone": row.backbone,
                     "method": row.method, "label": row.method_label, "encoder": row.encoder,
                     "size": int(effective if effective is not None else size), "seed": int(row.seed),
                     "value": float(row.value), "run_id": row.run_id})
    return pd.DataFrame(rows)


def collapse_plot(data: pd.DataFrame, metric: str = "ndcg@10"):
    """The collapse figure of `collapse_data`: every seed a hollow marker (gid `seed|method|size|seed`), the mean
    over seeds a line (gid `mean|method`), ±1 std over seeds a band where a size has 2+ seeds; y from 0."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    seeds_per_size = int(data.groupby(["method", "size"])["seed"].nunique().max())
    for method, group in data.groupby("method", sort=False):
        marker, color = COLLAPSE_STYLES.get(method, ("^", None))
        encoder = group["encoder"].iloc[0]
        label = method + (f" [{encoder}]" if isinstance(encoder, str) and encoder else "")
        stats = group.groupby("size")["value"].agg(["mean", "std", "count"]).reset_index()
        big = 11 if marker == "*" else 6
        for row in group.itertuples(index=False):
            ax.plot([row.size], [row.value], marker, markersize=big, markerfacecolor="none", color=color,
                    alpha=0.9, zorder=3, gid=f"seed|{method}|{row.size}|{row.seed}")
        line = "-" if len(stats) > 1 else ""
        ax.plot(stats["size"], stats["mean"], line, marker=marker, markersize=big / 2.5, color=color, zorder=2,
                label=label, gid=f"mean|{method}")
        spread = stats[stats["count"] > 1]
        if not spread.empty:
            ax.fill_between(spread["size"], spread["mean"] - spread["std"], spread["mean"] + spread["std"],
                            color=color, alpha=0.15, linewidth=0, zorder=1)
    ax.set_xscale("log", base=2)
    sizes = sorted(data["size"].unique())
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("embedding size")
    ax.set_ylabel(metric.upper())
    ax.set_ylim(0, float(data["value"].max()) * 1.12)
    first = data.iloc[0]
    seeds = data["seed"].nunique()
    ax.set_title(f"{first['backbone']} embedding collapse ({first['dataset']}, {first['split']}; {seeds} seed"
                 f"{'s' * (seeds > 1)}; y axis from 0)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    caption = "hollow markers: one per seed (run); line: mean over seeds"
    caption += ("; band: ± 1 std over seeds" if seeds_per_size > 1 else
                f"; {seeds_per_size} seed per size: no spread over seeds to show")
    _caption(fig, caption + "; y axis starts at 0 (not zoomed)")
    return fig


def collapse_figure(store: ResultStore, specs: list[RunSpec], out_dir: Path, metric: str = "ndcg@10") -> list[Path]:
    data = collapse_data(store, specs, metric)
    if data.empty or data.groupby("method")["size"].nunique().max() < 2:  # a sweep: some method at 2+ sizes
        print("figures: collapse skipped: no embedding-size sweep of LightGCN stored "
              "(python -m bench run --suite collapse)")
        return []
    with style():
        return _save(collapse_plot(data, metric), out_dir, "collapse")


# --- cold-start gain ------------------------------------------------------------------------------------

def gain_data(store: ResultStore, specs: list[RunSpec], metric: str = "ndcg@10", correction: str = "holm",
              baseline: str = "random") -> pd.DataFrame:
    """One row per (dataset, split, backbone, method) cell of the suite's main table (labels as the table prints
    them): `mean` over seeds of the overall `metric` (the results frame), `base` the baseline's mean on that
    backbone, `gain` = mean / base − 1 (the table's gain cell), `role` "baseline" for the baseline's own rows;
    the 95% two-level bootstrap interval, p, corrected p and `direction` of `significance_results` (the table's
    significance family: `family` comparisons, `correction`); `marks`: the cell's ‡ / ◊ as the table prints them
    (`cell_marks`), ◊ on a gain also where the baseline's cell holds a collapsed seed (as the gain column)."""
    from bench.report.tables import significance_results

    frame = _overall(results_frame(store, specs), metric)
    if frame.empty:
        return pd.DataFrame()
    keys = ["dataset", "split_label", "backbone_label", "method_label"]
    cells = dict(iter(frame.groupby(keys, sort=False)))
    results = significance_results(specs, store, metric, correction, baseline)
    tests = {} if results.empty else {
        (r["Dataset"], r["Split"], r["Backbone"], r["Method"]): r for _, r in results.iterrows()}
    rows = []
    for (dataset, split, backbone, method), cell in cells.items():
        base_cell = cells.get((dataset, split, backbone, baseline))
        mean = float(cell["value"].mean())
        base = float(base_cell["value"].mean()) if base_cell is not None else np.nan
        test = tests.get((dataset, split, backbone, method))
        marks = cell_marks(cell)
        if method != baseline and base_cell is not None and COLLAPSE_MARK not in marks and cell_marks(
                base_cell).endswith(COLLAPSE_MARK):
            marks += f" {COLLAPSE_MARK}"
        rows.append({"dataset": dataset, "split": split, "backbone": backbone, "method": method,
                     "role": "baseline" if method == baseline else "method", "mean": mean, "base": base,
                     "gain": 0.0 if method == baseline else mean / base - 1 if base else np.nan,
                     "seeds": int(cell["seed"].nunique()), "marks": marks.strip(),
                     "ci_low": float(test["ci_low"]) if test is not None else np.nan,
                     "ci_high": float(test["ci_high"]) if test is not None else np.nan,
                     "p": float(test["p"]) if test is not None else np.nan,
                     "p_corr": float(test["p_corr"]) if test is not None else np.nan,
                     "direction": (test["direction"] or "") if test is not None else ""})
    out = pd.DataFrame(rows)
    out["panel"] = out["split"] if out["dataset"].nunique() == 1 else out["dataset"] + "/" + out["split"]
    out["family"] = len(results)
    out["correction"] = correction
    out["baseline"] = baseline
    return out


def gain_plot(data: pd.DataFrame, metric: str = "ndcg@10", suite_name: str = "coldstart"):
    """The gain figure of `gain_data`: one panel per split, a bar per (backbone, method) row (gid
    `bar|panel|backbone|method`, height the gain in %), the baseline's mean beneath its backbone's tick."""
    plt = _plt()
    panels = list(dict.fromkeys(data["panel"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    baseline = str(data["baseline"].iloc[0])
    methods = list(dict.fromkeys(data.loc[data["role"] == "method", "method"]))
    colors = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4))
    width = 0.8 / max(len(methods), 1)
    marks_used = set()
    for ax, panel in zip(axes[0], panels):
        part = data[data["panel"] == panel]
        backbones = list(dict.fromkeys(part["backbone"]))
        labelled: set[str] = set()
        for j, method in enumerate(methods):
            rows = part[(part["method"] == method)].set_index("backbone").reindex(backbones)
            x = np.arange(len(backbones)) + (j - (len(methods) - 1) / 2) * width
            for xi, (backbone, row) in zip(x, rows.iterrows()):
                if row["gain"] != row["gain"]:  # no run of this method on this backbone
                    continue
                gain = 100 * row["gain"]
                low, high = 100 * row["ci_low"], 100 * row["ci_high"]
                has_ci = low == low and high == high
                errors = [[max(gain - low, 0.0)], [max(high - gain, 0.0)]] if has_ci else None
                ax.bar([xi], [gain], width, yerr=errors, capsize=2, color=colors[method],
                       label=None if method in labelled else method, gid=f"bar|{panel}|{backbone}|{method}",
                       error_kw={"linewidth": 1})
                labelled.add(method)
                text = {"better": BETTER_MARK, "worse": WORSE_MARK}.get(row["direction"], "")
                text = " ".join(filter(None, (text, row["marks"])))
                if text:
                    marks_used.update(m for m in (BETTER_MARK, WORSE_MARK, CAP_MARK, COLLAPSE_MARK) if m in text)
                    edge = (high if gain >= 0 else low) if has_ci else gain
                    ax.annotate(text, (xi, edge), xytext=(0, 2 if gain >= 0 else -2), textcoords="offset points",
                                ha="center", va="bottom" if gain >= 0 else "top", fontsize=7)
        bases = part[part["role"] == "baseline"].set_index("backbone")
        ticks = []
        for backbone in backbones:
            if backbone in bases.index:
                base = bases.loc[backbone]
                ticks.append(f"{backbone}\n{baseline} {base['mean']:.4f}" + (f" {base['marks']}" if base["marks"]
                                                                              else ""))
                marks_used.update(m for m in (CAP_MARK, COLLAPSE_MARK) if m in base["marks"])
            else:
                ticks.append(backbone)
        ax.set_xticks(np.arange(len(backbones)), ticks, fontsize=8)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(f"{panel}: {metric} gain over {baseline}", fontsize=9)
        ax.set_ylabel(f"relative gain (%) over {baseline}")
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.08)
    axes[0][0].legend(fontsize=8)
    family = int(data["family"].iloc[0])
    where = (f"`{suite_name}/significance.md`, one per row" if metric == "ndcg@10"
             else "this figure's comparisons, one per bar")
    what = "the table's gain" if metric == "ndcg@10" else "gain"
    caption = (f"bars: {what} (mean over seeds / {baseline}'s mean − 1); beneath each backbone: {baseline}'s "
               f"mean {metric}; error bars: 95% two-level bootstrap interval (each side's seeds, then the users, "
               "resampled)")
    lines = [caption]
    if family:
        lines.append(f"{BETTER_MARK} / {WORSE_MARK}: significantly better / worse than {baseline} (its bootstrap p, "
                     f"{family_text(str(data['correction'].iloc[0]), family, where)}, < 0.05), as the table marks "
                     "them")
    if CAP_MARK in marks_used:
        lines.append(f"{CAP_MARK}: a run of the cell stopped at its epoch cap (not converged)")
    if COLLAPSE_MARK in marks_used:
        lines.append(f"{COLLAPSE_MARK}: the cell (or its {baseline}) holds a collapsed seed")
    _caption(fig, "\n".join(lines))
    return fig


def coldstart_gain_figure(store: ResultStore, specs: list[RunSpec], out_dir: Path, metric: str = "ndcg@10",
                          suite_name: str = "coldstart", baseline: str = "random") -> list[Path]:
    data = gain_data(store, specs, metric, baseline=baseline)
    if data.empty or not (data["role"] == "method").any() or not (data["role"] == "baseline").any():
        print(f"figures: coldstart_gain skipped: no {baseline} vs method runs of the {suite_name} suite stored "
              f"(python -m bench run --suite {suite_name})")
        return []
    with style():
        return _save(gain_plot(data, metric, suite_name), out_dir, "coldstart_gain")


# --- activity -------------------------------------------------------------------------------------------

def _train_counts(spec: RunSpec, record: dict, cache_dir: Path) -> pd.Series | None:
    """Training interactions per user of the run's split (recomputed from the cache, hash-checked)."""
    from bench.runner import _dataset, _split

    try:
        split = _split(spec, _dataset(spec, cache_dir), cache_dir)
    except Exception as exc:  # no assets / cache on this machine: the figure is skipped, not the command
        print(f"figures: activity: cannot rebuild split {spec.split}: {exc}")
        return None
    if split.content_hash != record["provenance"]["split_hash"]:
        print(f"figures: activity: split {spec.split} hash differs from run {spec.run_id}'s; skipped")
        return None
    return split.train.groupby("user").size()


def activity_data(store: ResultStore, specs: list[RunSpec], cache_dir: Path, metric: str = "ndcg@10",
                  backbone: str | None = None, splits=None, methods=None) -> pd.DataFrame:
    """Per (split, method, seed, activity bucket): the mean per-user `metric` of the runs the results frame of
    `specs` holds (the table's runs), from their per-user sidecars; which backbone, splits and methods: the
    arguments, else names.yaml's `figures.activity`."""
    chosen = _figure_config("activity")
    backbone = backbone or chosen.get("backbone")
    splits = tuple(splits or chosen.get("splits") or ())
    methods = tuple(methods or chosen.get("methods") or ())
    stored = set(results_frame(store, specs)["run_id"])
    specs = [spec for spec in specs if spec.run_id in stored]
    rows = []
    counts_cache: dict[str, pd.Series | None] = {}
    for split in splits:
        pairings = pair(specs, {"split": split, "backbone": backbone}, {"method": methods[1]},
                        {"method": methods[0]})
        if not pairings:
            continue
        pairing = pairings[0]
        for spec in pairing.runs_a + pairing.runs_b:
            record = store.load(spec.run_id)
            key = record["provenance"]["split_hash"]
            if key not in counts_cache:
                counts_cache[key] = _train_counts(spec, record, cache_dir)
            counts = counts_cache[key]
            if counts is None:
                continue
            per_user = store.per_user(spec.run_id)[["user", metric]].dropna()
            per_user["train_n"] = per_user["user"].map(counts).fillna(0).astype(int)
            per_user["bucket"] = pd.cut(per_user["train_n"], bins=list(ACTIVITY_BINS), right=False)
            for bucket, group in per_user.groupby("bucket", observed=True):
                rows.append({"split": split, "method": spec.method, "seed": spec.seed,
                             "bucket": f"{int(bucket.left)}-{int(bucket.right) - 1}" if bucket.right < 10**8
                             else f"{int(bucket.left)}+", "lo": int(bucket.left),
                             "value": float(group[metric].mean()), "n_users": len(group)})
    return pd.DataFrame(rows)


def activity_plot(data: pd.DataFrame, metric: str = "ndcg@10"):
    plt = _plt()
    splits = list(dict.fromkeys(data["split"]))
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.6), squeeze=False)
    for ax, split in zip(axes[0], splits):
        part = data[data["split"] == split]
        buckets = part.drop_duplicates("bucket").sort_values("lo")
        labels = [f"{b}\n(n={n})" for b, n in zip(buckets["bucket"], part[part["seed"] == part["seed"].min()]
                  .drop_duplicates("bucket").set_index("bucket").reindex(buckets["bucket"])["n_users"])]
        order = list(_figure_config("activity").get("methods") or [])  # names.yaml's order: the baseline first
        methods = sorted(set(part["method"]), key=lambda m: (order.index(m) if m in order else len(order), m))
        width = 0.8 / len(methods)
        for j, method in enumerate(methods):
            stats = (part[part["method"] == method].groupby("bucket")["value"].agg(["mean", "std"])
                     .reindex(buckets["bucket"]))
            x = np.arange(len(buckets)) + (j - (len(methods) - 1) / 2) * width
            ax.bar(x, stats["mean"], width, yerr=stats["std"].fillna(0), capsize=2, label=method)
        ax.set_xticks(np.arange(len(buckets)), labels, fontsize=7)
        ax.set_xlabel("training interactions of the test user")
        ax.set_ylabel(metric)
        seeds = part["seed"].nunique()
        ax.set_title(f"LightGCN, {split} ({seeds} seed{'s' * (seeds > 1)})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    _caption(fig, "bars: mean over seeds of each run's mean per-user value in the bucket; error bars: std over seeds; "
             "n: test users in the bucket")
    return fig


def activity_figure(store: ResultStore, specs: list[RunSpec], out_dir: Path, cache_dir: Path,
                    metric: str = "ndcg@10") -> list[Path]:
    data = activity_data(store, specs, cache_dir, metric)
    if data.empty:
        chosen = _figure_config("activity")
        print(f"figures: activity skipped: no {chosen.get('backbone')} runs of {', '.join(chosen.get('methods', []))} "
              f"on {', '.join(chosen.get('splits', []))} with a rebuildable split")
        return []
    with style():
        return _save(activity_plot(data, metric), out_dir, "activity")


# --- quality / latency trade-off ------------------------------------------------------------------------

MARKERS = {"ID": "o", "LLMInit": "s", "CoLLM": "D", "TALLRec": "v", "ICL": "x", "LLM2Rec": "^", "PtE": "P"}
MARKER_SIZE = 6
CAP_SIZE = 2


def _plain_log(minor: bool = False):
    """A log axis' tick labels as plain numbers (0.5, 2, 30, 1000), on the ticks matplotlib's LogFormatter
    chooses to label (minor ticks only where the axis spans few decades)."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    return Plain(labelOnlyBase=not minor, minor_thresholds=(2, 0.5))


def tradeoff_points(frame: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """One point per (table row, split) of the paradigms table built from `frame` (`paradigms_frame`): the
    metric's `mean` and `std` over seeds (its cell), and the row's `latency_ms` as its `Latency ms/user` cell
    prints it (`latency_cell`: the median over every run of the row, at its two decimals; `loaded` where the
    cell carries the load mark), so every split of a row sits at the table's latency. Rows in table order."""
    from bench.report.paradigms import PARADIGM_ORDER

    if frame.empty:
        return pd.DataFrame()
    rank = {p: i for i, p in enumerate(PARADIGM_ORDER)}
    keys = sorted(frame[["paradigm", "backbone", "method"]].drop_duplicates().itertuples(index=False, name=None),
                  key=lambda k: (rank.get(k[0], len(rank)), k[1], k[2]))
    rows = []
    for paradigm, backbone, method in keys:
        runs = frame[(frame["paradigm"] == paradigm) & (frame["backbone"] == backbone) & (frame["method"] == method)]
        cell = latency_cell(runs)  # the table's cell, e.g. "1.04 *"
        latency, _, mark = cell.partition(" ")
        for (dataset, split), part in runs.groupby(["dataset", "split"], sort=False):
            values = part[metric]
            rows.append({"paradigm": paradigm, "backbone": backbone, "method": method, "dataset": dataset,
                         "split": split, "mean": float(values.mean()),
                         "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "seeds": int(len(values)),
                         "latency_ms": float(latency), "latency_cell": cell, "loaded": mark.strip() == LOAD_MARK})
    return pd.DataFrame(rows)


def tradeoff_plot(data: pd.DataFrame, metric: str = "ndcg@10"):
    """The trade-off figure of `tradeoff_points`: each point a marker with its error bar (gid
    `point|split|paradigm|backbone|method`), hollow where the row's latency is marked loaded; one label per row
    beside its highest point (`figure_labels.place_labels`, no two labels overlapping)."""
    from matplotlib.lines import Line2D

    from bench.report.figure_labels import errorbar_box, marker_box, place_labels

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = dict(zip(dict.fromkeys(data["split"]), palette * 4))
    for row in data.itertuples(index=False):
        colour = colours[row.split]
        drawn = ax.errorbar([row.latency_ms], [row.mean], yerr=[row.std], fmt=MARKERS.get(row.paradigm, "*"),
                            color=colour, capsize=CAP_SIZE, markersize=MARKER_SIZE,
                            markerfacecolor="none" if row.loaded else colour)
        drawn.lines[0].set_gid(f"point|{row.split}|{row.paradigm}|{row.backbone}|{row.method}")  # the marker's line
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_plain_log())
    ax.xaxis.set_minor_formatter(_plain_log(minor=True))
    ax.set_xlabel("latency to score one user (ms, log scale): the table's Latency ms/user")
    ax.set_ylabel(f"{metric} (mean over seeds)")
    ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], marker=MARKERS.get(p, "*"), linestyle="", color="grey", label=p)
               for p in dict.fromkeys(data["paradigm"])]
    handles += [Line2D([], [], marker="o", linestyle="", color=c, label=s) for s, c in colours.items()]
    if data["loaded"].any():
        handles.append(Line2D([], [], marker="o", linestyle="", color="grey", markerfacecolor="none",
                              label=f"hollow, {LOAD_MARK}: latency measured\non a loaded machine (upper bound)"))
    # beside the axes: inside, it hid the best (top) points
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.margins(x=0.08, y=0.06)
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    obstacles = []
    for row in data.itertuples(index=False):
        obstacles.append(marker_box(ax, row.latency_ms, row.mean, MARKER_SIZE))
        if row.std > 0:
            obstacles.append(errorbar_box(ax, row.latency_ms, row.mean - row.std, row.mean + row.std, CAP_SIZE))
    # one label per table row (paradigm on its backbone) beside its highest point: marker and colour say
    # paradigm and split
    items = []
    for (paradigm, backbone, method), group in data.groupby(["paradigm", "backbone", "method"], sort=False):
        top = group.loc[group["mean"].idxmax()]
        text = (method if paradigm != "ID" else f"{backbone} (ID)") + (f" {LOAD_MARK}" if top["loaded"] else "")
        items.append((text, (top["latency_ms"], top["mean"])))
    place_labels(ax, items, obstacles, fontsize=6)
    caption = ("x: the row's latency as its table prints it (median over the row's runs, every split and seed), "
               "so a row's points share one x; error bars: std over seeds")
    if data["loaded"].any():
        caption += f";\nhollow markers, {LOAD_MARK}: a run of the row was timed on a loaded machine (an upper bound)"
    _caption(fig, caption)
    return fig


def tradeoff_figure(store: ResultStore, specs: list[RunSpec], out_dir: Path, metric: str = "ndcg@10",
                    suite_name: str = "paradigms") -> list[Path]:
    """Quality against online cost: the metric (seed mean ± std) against the row's latency cell, per
    (split, paradigm on its backbone): the paradigms table's rows and cells."""
    from bench.report.paradigms import METRICS, paradigms_frame

    metrics = METRICS if metric in METRICS else (*METRICS, metric)
    data = tradeoff_points(paradigms_frame(specs, store, metrics), metric)
    if data.empty:
        print(f"figures: tradeoff skipped: no runs of the {suite_name} suite stored "
              f"(python -m bench run --suite {suite_name})")
        return []
    with style():
        return _save(tradeoff_plot(data, metric), out_dir, "tradeoff")


def write_figures(store: ResultStore, out_dir: Path, cache_dir: Path, which=FIGURES,
                  metric: str = "ndcg@10", profile: str | None = None) -> list[Path]:
    """Every requested figure whose runs are stored, each from the runs of its suite's table (`SUITES`, the
    suite's `profile`); returns the written PNG and PDF paths."""
    specs: dict[str, list[RunSpec]] = {}

    def runs(figure: str) -> list[RunSpec]:
        name = SUITES[figure]
        if name not in specs:
            specs[name] = suite_specs(name, store, profile)
        return specs[name]

    written: list[Path] = []
    if "collapse" in which:
        written += collapse_figure(store, runs("collapse"), out_dir, metric)
    if "coldstart_gain" in which:
        from bench.spec import load_suite

        name = SUITES["coldstart_gain"]
        written += coldstart_gain_figure(store, runs("coldstart_gain"), out_dir, metric, suite_name=name,
                                         baseline=load_suite(name, profile).baseline)
    if "activity" in which:
        written += activity_figure(store, runs("activity"), out_dir, cache_dir, metric)
    if "tradeoff" in which:
        written += tradeoff_figure(store, runs("tradeoff"), out_dir, metric, suite_name=SUITES["tradeoff"])
    return written
