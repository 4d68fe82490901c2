"""Figures from stored run records (matplotlib, PNG and PDF, into results/figures/).

- `collapse`: NDCG@10 against the CF embedding size (LightGCN, temporal_loo): random and LLMInit-var
  along the sweep, LLMInit-full at its encoder's dimension (embedding collapse).
- `coldstart_gain`: relative NDCG@10 gain of each LLMInit variant over `random`, per backbone, one panel
  per cold-start split, with its 95% two-level bootstrap interval (each side's seeds, then the users,
  resampled; bench/report/stats.py, as in the tables); ↑ / ↓ mark a significantly better / worse bar, the
  bootstrap p Holm-corrected over the figure's bars (the family the figure names beneath it).
- `activity`: NDCG@10 by user-activity bucket (training interactions of the test user, from the split
  the record names, recomputed from the cache and checked against the record's split hash).
- `tradeoff`: NDCG@10 against the median online latency to score one user (log axis), one marker per
  paradigm, one colour per split, error bars: std over seeds; the runs of the `paradigms` suite.

Runs are selected from the store by spec fields, whichever suite produced them; a figure whose runs
are missing is skipped with a message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.records import ResultStore
from bench.report.stats import BETTER_MARK, WORSE_MARK, compare, correct, decisive_p, family_text
from bench.selection import context_key, matches, pair, stored_specs
from bench.spec import RunSpec

FIGURES = ("collapse", "coldstart_gain", "activity", "tradeoff")
ACTIVITY_BINS = (1, 4, 8, 16, 32, 64, 128, 10**9)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        tmp = out_dir / f".{name}.tmp.{ext}"
        fig.savefig(tmp, dpi=150, bbox_inches="tight", metadata=None if ext == "png" else {"CreationDate": None})
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file
        paths.append(path)
    _plt().close(fig)
    return paths


def _overall(store: ResultStore, spec: RunSpec, metric: str) -> float:
    return float(store.load(spec.run_id)["metrics"]["overall"][metric])


def collapse_data(store: ResultStore, specs: list[RunSpec], metric: str = "ndcg@10",
                  where: dict[str, Any] | None = None) -> pd.DataFrame:
    """Rows (method, size, seed, value) of the best-covered sweep context."""
    where = where or {"dataset": "ml-100k", "split": "temporal_loo", "backbone": "lightgcn"}
    pool = [s for s in specs if matches(s, where) and matches(
        s, {"method": ["random", "llminit-var", "llminit-full"]})]
    ignore = {"backbone.embedding_size"}
    groups: dict[str, list[RunSpec]] = {}
    for spec in pool:
        groups.setdefault(context_key(spec, ignore), []).append(spec)
    if not groups:
        return pd.DataFrame()
    best = max(groups.values(), key=lambda g: (len(g), sorted(s.run_id for s in g)))
    rows = []
    for spec in best:
        record = store.load(spec.run_id)
        size = spec.backbone_settings["embedding_size"]
        if spec.method == "llminit-full":  # its size is the encoder's dimension
            size = record.get("method_info", {}).get("llminit", {}).get("k", size)
        rows.append({"method": spec.method, "encoder": spec.encoder, "size": int(size), "seed": spec.seed,
                     "value": float(record["metrics"]["overall"][metric]), "run_id": spec.run_id})
    return pd.DataFrame(rows)


def collapse_figure(store: ResultStore, specs: list[RunSpec], out_dir: Path, metric: str = "ndcg@10") -> list[Path]:
    data = collapse_data(store, specs, metric)
    if data.empty or data[data["method"] == "random"]["size"].nunique() < 2:
        print("figures: collapse skipped: no embedding-size sweep of LightGCN stored "
              "(python -m bench run --suite collapse)")
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    styles = {"random": ("o-", "tab:gray"), "llminit-var": ("s-", "tab:blue"), "llminit-full": ("*", "tab:red")}
    for method, group in data.groupby("method", sort=False):
        stats = group.groupby("size")["value"].agg(["mean", "std", "count"]).reset_index()
        marker, color = styles.get(method, ("^-", None))
        encoder = group["encoder"].iloc[0]
        label = method + (f" [{encoder}]" if isinstance(encoder, str) and encoder else "")
        ax.errorbar(stats["size"], stats["mean"], yerr=stats["std"].fillna(0), fmt=marker, color=color,
                    capsize=3, markersize=9 if method == "llminit-full" else 5, label=label)
    ax.set_xscale("log", base=2)
    sizes = sorted(data["size"].unique())
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("embedding size")
    ax.set_ylabel(metric.upper().replace("@", "@"))
    seeds = data["seed"].nunique()
    ax.set_title(f"LightGCN embedding collapse (ml-100k, temporal_loo; {seeds} seed{'s' * (seeds > 1)})",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "collapse")


def gain_data(store: ResultStore, specs: list[RunSpec], metric: str = "ndcg@10",
              splits=("half_history", "new_users_fewshot"), correction: str = "holm") -> pd.DataFrame:
    """Relative gain over random per (split, backbone, LLMInit variant), with its 95% two-level bootstrap
    interval and p (`bench.report.stats.compare`, every stored seed of each side), the per-seed spread (seeds
    both sides have) and the p corrected over the figure's bars (`p_corr`, one family: `family` bars)."""
    rows = []
    methods = sorted({s.method for s in specs if s.method.startswith("llminit-")})
    for split in splits:
        for method in methods:
            for pairing in pair(specs, {"split": split}, {"method": method}, {"method": "random"}):
                seeds = pairing.seeds
                result = compare(store, pairing.runs_a, pairing.runs_b, metric)
                base = np.mean([_overall(store, s, metric) for s in pairing.runs_b])
                matched_a = [s for s in pairing.runs_a if s.seed in seeds]
                matched_b = [s for s in pairing.runs_b if s.seed in seeds]
                per_seed = [_overall(store, a, metric) / _overall(store, b, metric) - 1
                            for a, b in zip(matched_a, matched_b)]
                rows.append({"split": split, "backbone": pairing.spec.backbone, "context": pairing.context,
                             "method": method, "gain": result["relative"], "base": base,
                             "ci_low": result.get("ci_low", np.nan), "ci_high": result.get("ci_high", np.nan),
                             "gain_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
                             "p": decisive_p(result), "seeds": len(seeds)})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        # one context per (split, backbone, method): the best-covered (pair() sorts by seeds)
        frame = frame.drop_duplicates(["split", "backbone", "method"], keep="first").reset_index(drop=True)
        frame["p_corr"] = correct(frame["p"].tolist(), correction)
        frame["family"] = len(frame)
        frame["correction"] = correction
    return frame


def _split_panels(data: pd.DataFrame):
    """(pyplot, figure, axes row, splits): one panel per split of `data`, in order of appearance."""
    plt = _plt()
    splits = list(dict.fromkeys(data["split"]))
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.6), squeeze=False)
    return plt, fig, axes, splits


def coldstart_gain_figure(store: ResultStore, specs: list[RunSpec], out_dir: Path,
                          metric: str = "ndcg@10") -> list[Path]:
    data = gain_data(store, specs, metric)
    if data.empty:
        print("figures: coldstart_gain skipped: no random vs LLMInit runs on half_history/new_users_fewshot stored "
              "(python -m bench run --suite coldstart)")
        return []
    plt, fig, axes, splits = _split_panels(data)
    methods = sorted(data["method"].unique())
    width = 0.8 / len(methods)
    for ax, split in zip(axes[0], splits):
        part = data[data["split"] == split]
        backbones = list(dict.fromkeys(part["backbone"]))
        for j, method in enumerate(methods):
            rows = part[part["method"] == method].set_index("backbone").reindex(backbones)
            x = np.arange(len(backbones)) + (j - (len(methods) - 1) / 2) * width
            errors = np.nan_to_num(np.vstack([rows["gain"] - rows["ci_low"], rows["ci_high"] - rows["gain"]]))
            ax.bar(x, 100 * rows["gain"], width, yerr=100 * errors, capsize=2, label=method)
            for xi, (gain, low, high, p) in zip(x, rows[["gain", "ci_low", "ci_high", "p_corr"]].to_numpy()):
                if p == p and p < 0.05:
                    edge = high if gain >= 0 else low
                    ax.text(xi, 100 * (edge if edge == edge else gain) + (1 if gain >= 0 else -4),
                            BETTER_MARK if gain > 0 else WORSE_MARK, ha="center", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(backbones)), backbones)
        ax.set_title(f"{split}: {metric} gain over random", fontsize=9)
        ax.set_ylabel("relative gain (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.text(0.01, -0.04, "error bars: 95% two-level bootstrap interval (each side's seeds, then the users, "
             f"resampled); {BETTER_MARK} / {WORSE_MARK}: significantly better / worse than random (its bootstrap p, "
             f"{family_text(str(data['correction'].iloc[0]), len(data), 'this figure (one per bar)')}, "
             "< 0.05)", fontsize=7)
    return _save(fig, out_dir, "coldstart_gain")


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
                  backbone: str = "lightgcn", splits=("half_history", "new_users_fewshot"),
                  methods=("random", "llminit-var")) -> pd.DataFrame:
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


def activity_figure(store: ResultStore, specs: list[RunSpec], out_dir: Path, cache_dir: Path,
                    metric: str = "ndcg@10") -> list[Path]:
    data = activity_data(store, specs, cache_dir, metric)
    if data.empty:
        print("figures: activity skipped: no LightGCN random vs llminit-var runs on half_history/new_users_fewshot "
              "with a rebuildable split")
        return []
    plt, fig, axes, splits = _split_panels(data)
    for ax, split in zip(axes[0], splits):
        part = data[data["split"] == split]
        buckets = part.drop_duplicates("bucket").sort_values("lo")
        labels = [f"{b}\n(n={n})" for b, n in zip(buckets["bucket"], part[part["seed"] == part["seed"].min()]
                  .drop_duplicates("bucket").set_index("bucket").reindex(buckets["bucket"])["n_users"])]
        methods = sorted(set(part["method"]), key=lambda m: (m != "random", m))
        width = 0.8 / len(methods)
        for j, method in enumerate(methods):
            stats = (part[part["method"] == method].groupby("bucket")["value"].agg(["mean", "std"])
                     .reindex(buckets["bucket"]))
            x = np.arange(len(buckets)) + (j - (len(methods) - 1) / 2) * width
            ax.bar(x, stats["mean"], width, yerr=stats["std"].fillna(0), capsize=2, label=method)
        ax.set_xticks(np.arange(len(buckets)), labels, fontsize=7)
        ax.set_xlabel("training interactions of the test user")
        ax.set_ylabel(metric)
        ax.set_title(f"LightGCN, {split}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, out_dir, "activity")


MARKERS = {"ID": "o", "LLMInit": "s", "CoLLM": "D", "TALLRec": "v", "ICL": "x", "LLM2Rec": "^", "PtE": "P"}


def tradeoff_figure(store: ResultStore, specs: list[RunSpec], out_dir: Path, metric: str = "ndcg@10",
                    suite_name: str = "paradigms") -> list[Path]:
    """Quality against online cost: the metric (seed mean ± std) against the median latency to score one
    user, per (split, paradigm on its backbone)."""
    from bench.report.paradigms import paradigms_frame, tradeoff_data

    data = tradeoff_data(paradigms_frame(specs, store), metric)
    if data.empty:
        print(f"figures: tradeoff skipped: no runs of the {suite_name} suite stored "
              f"(python -m bench run --suite {suite_name})")
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = dict(zip(dict.fromkeys(data["split"]), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for row in data.itertuples(index=False):
        # hollow: timed while other jobs shared the CPU (the latency is an upper bound)
        ax.errorbar(row.latency_ms, row.mean, yerr=row.std, fmt=MARKERS.get(row.paradigm, "*"),
                    color=colours[row.split], capsize=2, markersize=6,
                    markerfacecolor="none" if row.loaded else colours[row.split])
    # one label per row of the table (paradigm on its backbone), beside its highest point: marker and colour
    # already say paradigm and split, and a label per point overlapped the others
    for (paradigm, backbone, method), group in data.groupby(["paradigm", "backbone", "method"], sort=False):
        top = group.loc[group["mean"].idxmax()]
        ax.annotate(method if paradigm != "ID" else f"{backbone} (ID)", (top["latency_ms"], top["mean"]),
                    fontsize=6, xytext=(6, 0), textcoords="offset points", va="center")
    ax.set_xscale("log")
    ax.set_xlabel("median latency to score one user (ms, log scale)")
    ax.set_ylabel(f"{metric} (mean over seeds)")
    ax.grid(alpha=0.3, which="both")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=MARKERS.get(p, "*"), linestyle="", color="grey", label=p)
               for p in dict.fromkeys(data["paradigm"])]
    handles += [Line2D([], [], marker="o", linestyle="", color=c, label=s) for s, c in colours.items()]
    # beside the axes: inside, it hid the best (top) points
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    caption = "error bars: std over seeds; latency: median over the scored users of one run"
    if data["loaded"].any():
        caption += "; hollow: timed on a loaded machine (an upper bound)"
    fig.text(0.01, -0.03, caption, fontsize=7)
    return _save(fig, out_dir, "tradeoff")


def _suite_specs(name: str) -> list[RunSpec]:
    from bench.spec import expand, load_suite

    return expand(load_suite(name))


def write_figures(store: ResultStore, out_dir: Path, cache_dir: Path, which=FIGURES,
                  metric: str = "ndcg@10") -> list[Path]:
    """Every requested figure whose runs are stored; returns the written PNG and PDF paths."""
    specs = stored_specs(store)
    written: list[Path] = []
    if "collapse" in which:
        written += collapse_figure(store, specs, out_dir, metric)
    if "coldstart_gain" in which:
        written += coldstart_gain_figure(store, specs, out_dir, metric)
    if "activity" in which:
        written += activity_figure(store, specs, out_dir, cache_dir, metric)
    if "tradeoff" in which:
        written += tradeoff_figure(store, _suite_specs("paradigms"), out_dir, metric)
    return written
