"""Tables derived from run records: methods x (dataset, split), mean ± std over seeds, gain over
`random`, parameters and latency, in Markdown, LaTeX (booktabs) and CSV. Nothing here is hand-edited:
each table file names the run records it was built from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.records import ResultStore, atomic_write_text
from bench.spec import RunSpec, Suite

DEFAULT_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
SEGMENTS = ("user:warm", "user:cold", "item:head", "item:tail")


def collect(specs: list[RunSpec], store: ResultStore) -> pd.DataFrame:
    """One row per (run, segment) with every metric; runs without a record are absent."""
    rows = []
    for spec in specs:
        if not store.has(spec.run_id):
            continue
        record = store.load(spec.run_id)
        base = {"run_id": spec.run_id, "dataset": spec.dataset, "split": spec.split,
                "backbone": spec.backbone, "method": _label(spec), "seed": spec.seed,
                "trainable": record["params"]["trainable"], "latency_ms": record["latency"]["median_ms"],
                "train_s": record["timings"].get("train", np.nan),
                "epochs": record.get("method_info", {}).get("training", {}).get("epochs_run", np.nan)}
        for segment, values in record["metrics"].items():
            rows.append({**base, "segment": segment, **values})
    return pd.DataFrame(rows)


def _label(spec: RunSpec) -> str:
    """Method name, with the encoder when the method uses one chosen by the suite (seq-text [mpnet])."""
    return f"{spec.method} [{spec.encoder}]" if spec.encoder and spec.method.startswith("seq-") else spec.method


def _cell(values: pd.Series) -> str:
    if len(values) == 1:
        return f"{values.iloc[0]:.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def main_table(frame: pd.DataFrame, metrics=DEFAULT_METRICS, segment: str = "overall") -> pd.DataFrame:
    """Rows (backbone, method); per (dataset, split): metric cells, gain of NDCG@10 over random."""
    data = frame[frame["segment"] == segment]
    out_rows = []
    keys = ["backbone", "method"]
    for (backbone, method), group in data.groupby(keys, sort=False):
        row = {"Backbone": backbone, "Method": method}
        for (dataset, split), cell in group.groupby(["dataset", "split"], sort=False):
            prefix = f"{dataset}/{split}"
            for metric in metrics:
                row[f"{prefix} {metric}"] = _cell(cell[metric])
            base = data[(data["backbone"] == backbone) & (data["method"] == "random")
                        & (data["dataset"] == dataset) & (data["split"] == split)]
            gain = "—"
            if method != "random" and len(base):
                gain = f"{100 * (cell['ndcg@10'].mean() / base['ndcg@10'].mean() - 1):+.1f}%"
            row[f"{prefix} gain ndcg@10"] = gain
            row[f"{prefix} seeds"] = int(cell["seed"].nunique())
        row["Trainable params"] = f"{int(group['trainable'].median()):,}"
        row["Latency ms (median)"] = f"{group['latency_ms'].median():.2f}"
        out_rows.append(row)
    return pd.DataFrame(out_rows)


def segment_table(frame: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """Rows (dataset, split, backbone, method); columns: the metric per segment."""
    rows = []
    for key, group in frame.groupby(["dataset", "split", "backbone", "method"], sort=False):
        row = dict(zip(["Dataset", "Split", "Backbone", "Method"], key))
        for segment in ("overall", *SEGMENTS):
            cell = group[group["segment"] == segment]
            n_users = int(cell["n_users"].iloc[0]) if len(cell) else 0
            row[f"{segment} {metric}"] = _cell(cell[metric]) + f" (n={n_users})" if len(cell) else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def significance_table(specs: list[RunSpec], store: ResultStore, metric: str = "ndcg@10",
                       correction: str = "holm") -> pd.DataFrame:
    """Each method vs `random` on the same dataset/split/backbone: per-user paired Wilcoxon (users x
    seeds) and paired t over seeds, corrected for the number of comparisons in the table."""
    from bench.stats import compare, correct

    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.dataset, spec.split, spec.backbone, _label(spec)), []).append(spec)
    rows = []
    for (dataset, split, backbone, method), runs in groups.items():
        base = groups.get((dataset, split, backbone, "random"))
        if method == "random" or not base:
            continue
        result = compare(store, runs, base, metric)
        if not result["n_seeds"]:
            continue
        rows.append({"Dataset": dataset, "Split": split, "Backbone": backbone, "Method": method,
                     f"{metric} method": result["mean_a"], f"{metric} random": result["mean_b"],
                     "Gain %": 100 * result["relative"], "Wilcoxon p": result["wilcoxon_p"],
                     "t-test p (seeds)": result["ttest_p"], "Users x seeds": result["n_pairs"]})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["Wilcoxon p (corr.)"] = correct(table["Wilcoxon p"].tolist(), correction)
    table["t p (corr.)"] = correct(table["t-test p (seeds)"].tolist(), correction)
    table["Significant"] = np.where(table["Wilcoxon p (corr.)"] < 0.05, "yes", "no")
    for column in table.columns:
        if table[column].dtype.kind == "f":
            table[column] = table[column].map(lambda v: f"{v:.4g}")
    return table


def render(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "markdown":
        return table.to_markdown(index=False)
    if fmt == "latex":
        return table.to_latex(index=False, escape=True).replace("±", r"$\pm$")
    if fmt == "csv":
        return table.to_csv(index=False)
    raise ValueError(fmt)


def settings_note(suite: Suite, specs: list[RunSpec]) -> str:
    """What a reader must know to interpret the numbers: caps, early stopping, encoder, splits."""
    lines = [f"Suite `{suite.name}`: {suite.description}".rstrip()]
    seen = set()
    for spec in specs:
        if spec.backbone in seen:
            continue
        seen.add(spec.backbone)
        s = spec.backbone_settings
        lines.append(f"- {spec.backbone}: epochs cap {s['epochs']}, early stop after {s['stopping_step']} "
                     f"evaluations without validation NDCG@10 gain, batch {s['train_batch_size']}, "
                     f"lr {s['learning_rate']}, embedding {s['embedding_size']}")
    lines.append(f"- encoder: {suite.encoder}; seeds: {suite.seeds}; full ranking, train+valid items masked")
    if suite.notes:
        lines.append(f"- {suite.notes.strip()}")
    return "\n".join(lines)


def write_tables(suite: Suite, specs: list[RunSpec], store: ResultStore, out_dir: Path,
                 formats=("markdown", "latex", "csv")) -> dict[str, Path]:
    """Render the suite's tables from its records into out_dir/<suite>/; returns written paths."""
    frame = collect(specs, store)
    if frame.empty:
        return {}
    target = Path(out_dir) / suite.name
    main, segments = main_table(frame), segment_table(frame)
    significance = significance_table(specs, store)
    used = sorted(frame["run_id"].unique())
    missing = [s.label for s in specs if not store.has(s.run_id)]
    note = settings_note(suite, specs)
    sources = (f"{len(used)} run records (results/runs/<run_id>/record.json): " + ", ".join(used)
               + (f"\nNot run yet ({len(missing)}): " + ", ".join(missing) if missing else ""))
    written = {}
    ext = {"markdown": "md", "latex": "tex", "csv": "csv"}
    for fmt in formats:
        for name, table in (("main", main), ("segments", segments), ("significance", significance)):
            if table.empty:
                continue
            path = target / f"{name}.{ext[fmt]}"
            body = render(table, fmt)
            if fmt == "markdown":
                body = f"{body}\n\n{note}\n\nSources: {sources}\n"
            elif fmt == "latex":
                body = "% " + note.replace("\n", "\n% ") + f"\n% Sources: {sources}\n{body}"
            atomic_write_text(path, body)
            written[f"{name}.{ext[fmt]}"] = path
    return written
