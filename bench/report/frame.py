"""The one results frame: verified run records -> one tidy, typed `pandas.DataFrame` that every view reads, in
the manner of Inspect's `evals_df`: `results_frame` is the only code that reads records for the tables (through
`wide_frame`, one row per run and segment: `bench.report.tables.collect`), the figures and the static site of
`bench view`.

One row per (run, segment, metric). Columns, in order, with their dtypes:

- `suite`, `profile` (str; `suite_frame` only: `profile` is "default" for a suite's default profile)
- `run_id` (str): the run's id, its folder under `<results>/runs/`
- `dataset` (str); `split`, `backbone`, `method` (str): the registry names of the run's layers
- `split_label`, `backbone_label`, `method_label` (str): the names the tables print, with the settings that
  vary among runs of that name (`ctr_temporal [shots=16]`, `lightgcn [embedding_size=256]`,
  `llm2rec [train_dataset=ml-1m]`): a table cell is one (dataset, split_label, backbone_label, method_label)
- `encoder` (str, <NA> when the run has none); `seed` (int64)
- `protocol` (str): the method class's declared protocol, "ranking" or "pointwise"
- `segment` (str): `overall`, `user:cold`, `item:tail`, `pair:warm`, `catalogue`, ...
- `metric` (str): `ndcg@10`, `recall@20`, `auc`, `coverage@10`, ... (every value a segment holds except
  the counts `n_users`, `n_pairs`, `n_candidates`)
- `value` (float64): the metric's value in the record (`record["metrics"][segment][metric]`)
- `n_users` (Int64): users the segment's value averages over (<NA> where the record has no count)
- `trainable` (int64): trainable parameters; `latency_ms` (float64): median milliseconds to score one user
- `converged` (boolean, <NA> where the record keeps no `fit` report: records written before it existed):
  the record's `fit.converged`; `capped` (bool): a trained component stopped at its
  epoch cap (`bench.report.convergence`); `collapsed` (bool): a seed far below its cell's median;
  `latency_loaded` (bool): latency timed on a loaded machine (an upper bound)
- run facts the tables print: `frozen` (int64: frozen parameters used online), `train_s`, `epochs` (float64),
  `capped_parts` (str: the components at their cap), the pointwise CF model's `cf_key`, `cf_pairs`,
  `cf_valid_auc`, `cf_role` (ctr), and the counts `n_pairs`, `n_candidates` (Int64)

Rows are in the specs' order, then the record's segment order, then metric name order. Runs without a
complete record are absent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.records import ResultStore
from bench.report.convergence import capped_components, mark_collapsed, run_capped
from bench.report.labels import backbone_labels, latency_loaded, method_labels, method_protocol, split_labels
from bench.spec import RunSpec, expand, load_suite, with_stored_seeds

COUNT_KEYS = ("n_users", "n_pairs", "n_candidates")
COLUMNS = {
    "run_id": "str", "dataset": "str", "split": "str", "split_label": "str", "backbone": "str",
    "backbone_label": "str", "method": "str", "method_label": "str", "encoder": "str", "seed": "int64",
    "protocol": "str", "segment": "str", "metric": "str", "value": "float64", "n_users": "Int64",
    "trainable": "int64", "latency_ms": "float64", "converged": "boolean", "capped": "bool", "collapsed": "bool",
    "latency_loaded": "bool",
    # run facts the tables print (cost columns, the ctr table's CF model column, the cap note)
    "frozen": "int64", "train_s": "float64", "epochs": "float64", "capped_parts": "str", "cf_key": "str",
    "cf_pairs": "float64", "cf_valid_auc": "float64", "cf_role": "str", "n_pairs": "Int64", "n_candidates": "Int64",
}
# the run-level columns of the tables' wide view (`wide_frame`), in the order the tables have always read them
WIDE_RUN_COLUMNS = ("run_id", "dataset", "split", "backbone", "method", "seed", "trainable", "latency_ms", "frozen",
                    "train_s", "epochs", "cf_key", "cf_pairs", "cf_valid_auc", "cf_role", "capped", "capped_parts",
                    "latency_loaded", "protocol")


def empty_frame(extra: dict[str, str] | None = None) -> pd.DataFrame:
    """A results frame with no rows and every column typed."""
    dtypes = {**(extra or {}), **COLUMNS}
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})


def cf_model_facts(record: dict) -> dict:
    """The pointwise CF model a run trained or mapped (ctr suites): a CF row's own model (`training`) or CoLLM's
    pre-trained CF encoder (`cf`): its cache key, the training pairs it learnt from and its best validation AUC
    (NaN / empty where the run has none)."""
    info = record.get("method_info", {})
    role = "mapped" if "cf" in info else "trained"
    model = info.get("cf") or info.get("training") or {}
    if "best_valid_auc" not in model:
        return {"cf_key": "", "cf_pairs": np.nan, "cf_valid_auc": np.nan, "cf_role": ""}
    return {"cf_key": str(model.get("key", "")), "cf_pairs": model.get("n_train_pairs", np.nan),
            "cf_valid_auc": float(model["best_valid_auc"]), "cf_role": role}


def _run_facts(spec: RunSpec, record: dict, labels: tuple[dict, dict, dict]) -> dict:
    backbones, splits, methods = labels
    return {"run_id": spec.run_id, "dataset": spec.dataset, "split": spec.split, "split_label": splits[spec.run_id],
            "backbone": spec.backbone, "backbone_label": backbones[spec.run_id], "method": spec.method,
            "method_label": methods[spec.run_id], "encoder": spec.encoder, "seed": spec.seed,
            "protocol": method_protocol(spec.method), "trainable": record["params"]["trainable"],
            "latency_ms": record["latency"]["median_ms"], "converged": (record.get("fit") or {}).get("converged"),
            "capped": run_capped(record), "latency_loaded": latency_loaded(record),
            "frozen": record["params"].get("frozen_online", 0), "train_s": record["timings"].get("train", np.nan),
            "epochs": record.get("method_info", {}).get("training", {}).get("epochs_run", np.nan),
            "capped_parts": ", ".join(c.name for c in capped_components(record)), **cf_model_facts(record)}


def results_frame(store: ResultStore, specs: list[RunSpec]) -> pd.DataFrame:
    """The tidy results frame of `specs`' stored runs (columns and dtypes in the module docstring): the one loader
    of verified records every view reads (the tables through `wide_frame`). `attrs["metric_order"]`: the metrics
    in the order the records first list them (the wide view's column order)."""
    labels = (backbone_labels(specs), split_labels(specs), method_labels(specs, store))
    rows, appearance = [], {}
    for spec in specs:
        if not store.has(spec.run_id):
            continue
        record = store.load(spec.run_id)  # verified: seal and content (bench.records)
        run = _run_facts(spec, record, labels)
        for segment, values in record["metrics"].items():
            counts = {key: values.get(key) for key in COUNT_KEYS}
            for metric in values:
                appearance.setdefault(metric, len(appearance))
            for metric in sorted(m for m in values if m not in COUNT_KEYS):
                rows.append({**run, "segment": segment, **counts, "metric": metric, "value": values[metric]})
    if not rows:
        return empty_frame()
    frame = pd.DataFrame(rows)
    frame.attrs["metric_order"] = list(appearance)
    collapsed = set(mark_collapsed(wide_frame(frame, mark=False)).query("collapsed")["run_id"])
    frame["collapsed"] = frame["run_id"].isin(collapsed)
    typed = frame[list(COLUMNS)].astype(COLUMNS)
    typed.attrs["metric_order"] = list(appearance)
    return typed


def wide_frame(frame: pd.DataFrame, mark: bool = True) -> pd.DataFrame:
    """The tables' view of the results frame: one row per (run, segment) in the records' order, the labels as
    `split` / `backbone` / `method`, the run facts, every metric and count as a column (in the order the records
    list them); `collapsed` marked (bench.report.convergence) unless `mark` is False."""
    if frame.empty:
        return pd.DataFrame()
    key = ["run_id", "segment"]
    first = frame.drop_duplicates(key).set_index(key)
    order = {name: i for i, name in enumerate(frame.attrs.get("metric_order") or [])}
    values = frame.pivot(index=key, columns="metric", values="value").reindex(first.index)
    counts = [c for c in COUNT_KEYS if first[c].notna().any()]
    measured = sorted([*values.columns, *counts], key=lambda name: order.get(name, len(order)))
    wide = first.rename(columns={"split": "_split", "backbone": "_backbone", "method": "_method",
                                 "split_label": "split", "backbone_label": "backbone", "method_label": "method"})
    wide = pd.concat([wide, values], axis=1).reset_index()
    for count in counts:
        wide[count] = wide[count].astype(object).where(wide[count].notna(), np.nan)
    wide = wide[[*WIDE_RUN_COLUMNS, "segment", *measured]]
    return mark_collapsed(wide) if mark else wide


def suite_frame(name: str, profile: str | None, store: ResultStore) -> pd.DataFrame:
    """The results frame of a suite's stored runs (its expanded specs plus the seeds `--extra-seeds` stored),
    with `suite` and `profile` columns first."""
    specs = with_stored_seeds(expand(load_suite(name, profile)), store.has)
    frame = results_frame(store, specs)
    frame.insert(0, "profile", pd.Series([profile or "default"] * len(frame), dtype="str"))
    frame.insert(0, "suite", pd.Series([name] * len(frame), dtype="str"))
    return frame
