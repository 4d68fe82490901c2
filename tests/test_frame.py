"""The one results frame (bench.report.frame) against stored records: the `collapse` suite's 11 committed runs
and one committed pointwise (ctr) run, copied into a temporary store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.records import ResultStore
from bench.report.frame import COLUMNS, COUNT_KEYS, results_frame, suite_frame
from bench.spec import expand, load_suite

RESULTS = Path(__file__).resolve().parents[1] / "results"


def copy_store(target: Path, suite: str, extra_runs: int = 0, extra_suite: str = "ctr") -> list:
    """A results folder at `target` with the stored records of `suite` (and of the first `extra_runs` stored
    runs of `extra_suite`), its generated tables, the claims report and the figures; returns the specs copied."""
    stored = ResultStore(RESULTS)
    specs = [s for s in expand(load_suite(suite)) if stored.has(s.run_id)]
    specs += [s for s in expand(load_suite(extra_suite)) if stored.has(s.run_id)][:extra_runs]
    if not specs:
        pytest.skip(f"no stored records of suite {suite!r} under {RESULTS}")
    for spec in specs:
        shutil.copytree(stored.run_dir(spec.run_id), target / "runs" / spec.run_id,
                        ignore=shutil.ignore_patterns("work"))
    if (RESULTS / suite).is_dir():
        shutil.copytree(RESULTS / suite, target / suite, ignore=shutil.ignore_patterns("*.png", "*.tex"))
    if (RESULTS / "claims.md").is_file():
        shutil.copy(RESULTS / "claims.md", target / "claims.md")
    (target / "figures").mkdir(exist_ok=True)
    for path in (RESULTS / "figures").glob("*.png"):
        shutil.copy(path, target / "figures" / path.name)
    return specs


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[ResultStore, list]:
    root = tmp_path_factory.mktemp("results")
    specs = copy_store(root, "collapse", extra_runs=1)
    return ResultStore(root), specs


def test_values_are_the_records(store):
    """Every row's value and n_users are the record's, and each run has one row per (segment, metric)."""
    store, specs = store
    frame = results_frame(store, specs)
    assert frame["run_id"].nunique() == len(specs) == 12
    for spec in specs:
        record = store.load(spec.run_id)
        rows = frame[frame["run_id"] == spec.run_id]
        expected = sum(len(set(values) - set(COUNT_KEYS)) for values in record["metrics"].values())
        assert len(rows) == expected
        for row in rows.itertuples():
            segment = record["metrics"][row.segment]
            assert row.value == segment[row.metric]
            assert row.n_users == segment["n_users"]
        assert set(rows["segment"]) == set(record["metrics"])
        assert (rows["trainable"] == record["params"]["trainable"]).all()
        converged = record.get("fit", {}).get("converged")
        assert rows["converged"].isna().all() if converged is None else (rows["converged"] == converged).all()
        assert (rows["seed"] == spec.seed).all() and (rows["method"] == spec.method).all()


def test_labels_protocol_and_a_stored_value(store):
    """The collapse grid's labels carry the swept setting; the ctr run is pointwise with AUC rows; one value
    read back by hand from its record file."""
    store, specs = store
    frame = results_frame(store, specs)
    ranking = frame[frame["protocol"] == "ranking"]
    assert set(ranking["backbone"]) == {"lightgcn"}
    assert "lightgcn [embedding_size=32]" in set(ranking["backbone_label"])
    assert "llminit-full (runs at d=384)" in set(ranking["method_label"])
    assert {"ndcg@10", "recall@20", "hit@10", "mrr@20"} <= set(ranking["metric"])
    pointwise = frame[frame["protocol"] == "pointwise"]
    assert pointwise["run_id"].nunique() == 1 and {"auc", "uauc"} <= set(pointwise["metric"])
    assert set(pointwise["segment"]) >= {"overall", "pair:warm", "pair:cold"}
    run_id = specs[0].run_id
    import json

    raw = json.loads((store.run_dir(run_id) / "record.json").read_text())
    value = frame.query("run_id == @run_id and segment == 'overall' and metric == 'ndcg@10'")["value"]
    assert value.tolist() == [raw["metrics"]["overall"]["ndcg@10"]]
    assert 0.0 < value.iloc[0] < 1.0


def test_dtypes_and_order(store):
    store, specs = store
    frame = results_frame(store, specs)
    assert list(frame.columns) == list(COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {c: str(pd.Series(dtype=t).dtype) for c, t in COLUMNS.items()}
    assert frame["run_id"].drop_duplicates().tolist() == [s.run_id for s in specs]  # the specs' order
    empty = results_frame(store, [])
    assert empty.empty and list(empty.columns) == list(COLUMNS)


def test_suite_frame_and_missing_runs(store, tmp_path):
    """suite_frame adds suite / profile; a run without a record is absent, not an error."""
    store, specs = store
    frame = suite_frame("collapse", None, store)
    assert list(frame.columns[:2]) == ["suite", "profile"]
    assert set(frame["suite"]) == {"collapse"} and set(frame["profile"]) == {"default"}
    assert frame["run_id"].nunique() == 11
    partial = tmp_path / "results"
    shutil.copytree(store.root / "runs" / specs[0].run_id, partial / "runs" / specs[0].run_id)
    only = results_frame(ResultStore(partial), specs)
    assert set(only["run_id"]) == {specs[0].run_id}
