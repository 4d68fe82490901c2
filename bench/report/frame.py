"""The one results frame: verified run records -> one tidy, typed `pandas.DataFrame` that every view reads
(the static site of `bench view`; the tables' wide rows come from `bench.report.tables.collect`, which this
frame melts), in the manner of Inspect's `evals_df`.

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

Rows are in the specs' order, then the record's segment order, then metric name order. Runs without a
complete record are absent.
"""

from __future__ import annotations

import pandas as pd

from bench.records import ResultStore
from bench.report.tables import collect
from bench.spec import RunSpec, expand, load_suite, with_stored_seeds

COUNT_KEYS = ("n_users", "n_pairs", "n_candidates")
COLUMNS = {
    "run_id": "str", "dataset": "str", "split": "str", "split_label": "str", "backbone": "str",
    "backbone_label": "str", "method": "str", "method_label": "str", "encoder": "str", "seed": "int64",
    "protocol": "str", "segment": "str", "metric": "str", "value": "float64", "n_users": "Int64",
    "trainable": "int64", "latency_ms": "float64", "converged": "boolean", "capped": "bool", "collapsed": "bool",
    "latency_loaded": "bool",
}


def method_protocol(method: str) -> str:
    """The protocol a registry entry's class declares ("ranking" or "pointwise")."""
    from bench.catalog import METHODS

    return METHODS.get(method).protocol


def empty_frame(extra: dict[str, str] | None = None) -> pd.DataFrame:
    """A results frame with no rows and every column typed."""
    dtypes = {**(extra or {}), **COLUMNS}
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})


def results_frame(store: ResultStore, specs: list[RunSpec]) -> pd.DataFrame:
    """The tidy results frame of `specs`' stored runs (columns and dtypes in the module docstring)."""
    wide = collect(specs, store)
    if wide.empty:
        return empty_frame()
    by_id = {spec.run_id: spec for spec in specs}
    runs = wide.drop_duplicates("run_id")["run_id"]
    records = {run_id: store.load(run_id) for run_id in runs}
    converged = {run_id: r.get("fit", {}).get("converged") for run_id, r in records.items()}
    metrics = sorted({key for r in records.values() for values in r["metrics"].values() for key in values}
                     - set(COUNT_KEYS))
    protocols = {name: method_protocol(name) for name in {by_id[r].method for r in runs}}
    wide = wide.rename(columns={"split": "split_label", "backbone": "backbone_label", "method": "method_label"})
    wide["split"] = [by_id[r].split for r in wide["run_id"]]
    wide["backbone"] = [by_id[r].backbone for r in wide["run_id"]]
    wide["method"] = [by_id[r].method for r in wide["run_id"]]
    wide["encoder"] = [by_id[r].encoder for r in wide["run_id"]]
    wide["protocol"] = [protocols[m] for m in wide["method"]]
    wide["converged"] = wide["run_id"].map(converged)
    if "n_users" not in wide.columns:
        wide["n_users"] = pd.NA
    for flag in ("capped", "collapsed", "latency_loaded"):
        wide[flag] = wide[flag].fillna(False).astype(bool) if flag in wide.columns else False
    run_columns = [c for c in COLUMNS if c not in ("metric", "value")]
    wide = wide.assign(_row=range(len(wide)))
    tidy = wide.melt(id_vars=run_columns + ["_row"], value_vars=metrics, var_name="metric", value_name="value")
    # a metric a segment does not hold is NaN in the wide frame (its union of columns); no record stores NaN
    tidy = tidy.dropna(subset=["value"]).sort_values(["_row", "metric"], kind="stable")
    tidy = tidy[list(COLUMNS)].reset_index(drop=True)
    return tidy.astype(COLUMNS)


def suite_frame(name: str, profile: str | None, store: ResultStore) -> pd.DataFrame:
    """The results frame of a suite's stored runs (its expanded specs plus the seeds `--extra-seeds` stored),
    with `suite` and `profile` columns first."""
    specs = with_stored_seeds(expand(load_suite(name, profile)), store.has)
    frame = results_frame(store, specs)
    frame.insert(0, "profile", pd.Series([profile or "default"] * len(frame), dtype="str"))
    frame.insert(0, "suite", pd.Series([name] * len(frame), dtype="str"))
    return frame
