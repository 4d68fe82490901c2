"""The answer on screen after `bench run`, and `bench table --runs ID,... | --last N`: one row per run with its key
metrics (Recall / NDCG @10 for a ranking run, AUC / UAUC for a pointwise one), the users they average over, whether
it converged, and where its record is."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.records import ResultStore

CAP_MARK = "‡"  # as in the suites' tables: stopped at its epoch / step cap instead of early on validation
RANKING_KEYS = ("recall@10", "ndcg@10")
POINTWISE_KEYS = ("auc", "uauc")


def _converged_cell(record: dict) -> str:
    from bench.report.convergence import training_components

    components = training_components(record)  # read once: capped (True), not judged (None), converged (False)
    capped = [c for c in components if c.capped is True]
    if capped:
        return f"{CAP_MARK} cap: {', '.join(c.name for c in capped)}"
    return "?" if any(c.capped is None for c in components) else "yes"


def run_row(store: ResultStore, run_id: str) -> dict:
    """The summary row of one stored run (its record verified on load)."""
    record = store.load(run_id)
    spec, overall = record["spec"], record["metrics"].get("overall", {})
    keys = POINTWISE_KEYS if "auc" in overall else RANKING_KEYS
    row = {"run": run_id, "dataset": spec["dataset"], "split": spec["split"], "backbone": spec["backbone"],
           "method": spec["method"], "seed": spec["seed"]}
    row.update({key: overall.get(key) for key in keys})
    row["users"] = overall.get("n_users")
    row["converged"] = _converged_cell(record)
    row["record"] = str(store.record_path(run_id))
    return row


def runs_frame(store: ResultStore, run_ids: list[str]) -> pd.DataFrame:
    """One row per run, in the order given; a run id without a (valid) record is a BenchError naming it."""
    missing = [run_id for run_id in run_ids if not store.has(run_id)]
    if missing:
        raise BenchError(f"no stored record for run id {missing[0]} under {store.root} "
                         f"({len(missing)} of {len(run_ids)} missing); `bench table --last 5` lists the newest")
    return pd.DataFrame([run_row(store, run_id) for run_id in run_ids])


def resolve_run_ids(store: ResultStore, given: list[str]) -> list[str]:
    """Full run ids for the ids or unique prefixes given (at least 4 characters)."""
    root = Path(store.root) / "runs"
    known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    out = []
    for text in given:
        if len(text) < 4:
            raise BenchError(f"--runs {text!r}: give a run id or a prefix of at least 4 characters")
        matches = [run_id for run_id in known if run_id.startswith(text)]
        if len(matches) != 1:
            raise BenchError(f"--runs {text!r}: {'no' if not matches else len(matches)} stored run ids under "
                             f"{root} start with it" + ("" if not matches else f" ({', '.join(matches[:4])}, ...)"))
        out.append(matches[0])
    return out


def latest_run_ids(store: ResultStore, n: int) -> list[str]:
    """The `n` runs that finished last, by the `provenance.finished` time their records carry (not file times),
    newest first."""
    root = Path(store.root) / "runs"
    stamped = []
    for path in sorted(root.glob("*/record.json")) if root.is_dir() else []:
        try:
            finished = json.loads(path.read_text()).get("provenance", {}).get("finished") or ""
        except (OSError, ValueError):
            continue  # a damaged record: `bench verify --records` reports it
        stamped.append((finished, path.parent.name))
    if not stamped:
        raise BenchError(f"no run records under {root}")
    return [run_id for _, run_id in sorted(stamped, reverse=True)[:n]]


def render_runs(frame: pd.DataFrame, fmt: str = "markdown") -> str:
    """The rows as a Markdown (console) or CSV table; metrics to 4 decimals; constant identity columns (the same
    dataset or split for every row) stated once above the table instead of repeated."""
    shown = frame.copy()
    for column in (*RANKING_KEYS, *POINTWISE_KEYS):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "—" if pd.isna(v) else f"{v:.4f}")
    if fmt == "csv":
        return shown.to_csv(index=False)
    lead = []
    for column in ("dataset", "split", "backbone"):
        if len(shown) > 1 and shown[column].nunique() == 1:
            lead.append(f"{column} {shown[column].iloc[0]}")
            shown = shown.drop(columns=column)
    table = shown.to_markdown(index=False)
    return (" · ".join(lead) + "\n" if lead else "") + table


def compare_hint(frame: pd.DataFrame, results: Path | str) -> str:
    """The commands that compare the runs' methods (two or more methods) and show this table again."""
    methods = list(dict.fromkeys(frame["method"]))
    again = f"this table again: python -m bench table --runs {','.join(frame['run'])} --results {results}"
    if len(methods) < 2:
        return again
    where = "".join(f" --{column} {frame[column].iloc[0]}" for column in ("dataset", "split", "backbone")
                    if frame[column].nunique() == 1)
    # the ID baseline (random) as side B where it is among them, as the suites' tables compare
    b = "random" if "random" in methods else methods[0]
    a = next(m for m in methods if m != b)
    return f"compare: python -m bench compare {a} {b}{where} --results {results}\n{again}"


MAX_SHOWN = 20  # rows of the answer printed after `bench run`; the rest are counted


def answer(store: ResultStore, run_ids: list[str], results: Path | str) -> str:
    """What `bench run` prints last: the table of its runs that have a record (at most MAX_SHOWN rows) and the
    commands that compare them; empty when none has one."""
    stored = [run_id for run_id in run_ids if store.has(run_id)]
    if not stored:
        return ""
    frame = runs_frame(store, stored[:MAX_SHOWN])
    more = len(stored) - len(frame)
    text = render_runs(frame) + (f"\n... and {more} more runs" if more > 0 else "")
    return text + "\n" + compare_hint(frame, results)
