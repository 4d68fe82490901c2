"""Converged, or marked (bench.report.convergence): which trained component of a run stopped at its cap, from
the records as they are stored (pointwise CF models and CoLLM's CF encoder never recorded it), the ‡ it puts
in every table (the ctr tables included), the ◊ of a collapsed seed (below half its cell's median) listed
under every table that shows it, and the per-suite counts, on synthetic run records (no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.records import ResultStore
from bench.report.convergence import (
    CAP_MARK,
    COLLAPSE_FRACTION,
    COLLAPSE_MARK,
    collapse_note,
    collapsed_runs,
    convergence_counts,
    convergence_frame,
    main,
    run_capped,
    training_components,
)
from bench.report.tables import cap_note, collect, ctr_segment_table, ctr_table, main_table, segment_table
from bench.spec import RunSpec, Suite, expand, load_suite

N_USERS = 40


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _components(record: dict) -> dict[str, bool | None]:
    return {c.name: c.capped for c in training_components(record)}


def _ctr_record(epochs_run: int | None, cap: int = 30, curve: int | None = None, **training) -> dict:
    info = {"train_seconds": 1.0, **training}
    if epochs_run is not None:
        info["epochs_run"] = epochs_run
    info["curve"] = [{"epoch": e, "valid_auc": 0.5} for e in range(curve if curve is not None else epochs_run or 0)]
    return {"spec": {"backbone": "none", "backbone_settings": {"epochs": 300}, "method": "mf-ctr",
                     "method_settings": {"epochs": cap, "patience": 3}},
            "fit": {"converged": None, "curve": info["curve"]}, "method_info": {"training": info}}


def test_components_read_from_the_records_as_stored():
    # pointwise CF rows of the ctr suite: no flag recorded; the cap is method_settings.epochs (not the unused
    # backbone_settings.epochs 300 of `backbone: none`)
    assert _components(_ctr_record(30)) == {"training": True}
    assert _components(_ctr_record(12)) == {"training": False}
    assert _components(_ctr_record(None, curve=30)) == {"training": True}  # the curve's length when no count
    assert _components(_ctr_record(None, curve=29)) == {"training": False}
    # a record written from now on carries the flag, which wins over the epoch count
    assert _components(_ctr_record(30, early_stopped=True)) == {"training": False}
    assert training_components(_ctr_record(30))[0].detail == "30 of 30 epochs"
    # RecBole backbones: fit.converged, else the backbone's early_stopped
    assert _components({"fit": {"converged": False}}) == {"training": True}
    assert _components({"fit": {"converged": True}, "method_info": {"training": {"early_stopped": False}}}) == {
        "training": False}
    assert _components({"fit": {"converged": None}, "method_info": {"training": {"early_stopped": False}}}) == {
        "training": True}
    # CoLLM: the CF encoder against the method's cf.epochs (nested under llm for a reranker), the LLM steps by
    # their selection: best at the last of several evaluations = at the cap; one evaluation = not judged
    collm = {"spec": {"method": "collm-mf", "backbone": "none",
                      "method_settings": {"epochs": 1, "cf": {"epochs": 30, "patience": 3}}},
             "fit": {"converged": None, "curve": []},
             "method_info": {"cf": {"epochs_run": 30}, "stage1": {"selection": {
                 "best_step": 32, "early_stopped": False, "curve": [{"step": 16}, {"step": 32}]}},
                 "stage2": {"selection": {"best_step": 4, "early_stopped": False, "curve": [{"step": 4}]}}}}
    assert _components(collm) == {"CF encoder": True, "LLM step 1": True, "LLM step 2": None}
    assert run_capped(collm)
    collm["method_info"]["cf"]["epochs_run"] = 21
    collm["method_info"]["stage1"]["selection"].update(best_step=16, early_stopped=True)
    assert _components(collm) == {"CF encoder": False, "LLM step 1": False, "LLM step 2": None}
    assert not run_capped(collm)  # nothing at its cap; step 2 cannot tell, so it is not marked
    rerank = {"spec": {"method": "collm-mf-rerank", "backbone": "lightgcn", "backbone_settings": {"epochs": 50},
                       "method_settings": {"llm": {"cf": {"epochs": 30}}}},
              "method_info": {"cf": {"epochs_run": 30}, "rerank": {"retrieval": {"converged": True}}}}
    assert _components(rerank) == {"CF encoder": True, "retrieval backbone": False}
    assert not run_capped({"fit": {"converged": None}, "method_info": {}})  # nothing trained on validation
    # the components are the family's to declare (Method.training_components): the same record keys under a
    # method of another family are not read as a CF encoder or LLM steps
    assert _components({**collm, "spec": {**collm["spec"], "method": "mf-ctr"}}) == {}


def _put(store: ResultStore, spec: RunSpec, level: float, record_extra: dict | None = None,
         pointwise: bool = False) -> None:
    """A record whose overall main metric is exactly `level` (every user scores it)."""
    metric = "auc" if pointwise else "ndcg@10"
    per_user = pd.DataFrame({"user": [str(u) for u in range(N_USERS)], metric: np.full(N_USERS, level)})
    if pointwise:
        metrics = {segment: {"auc": level, "uauc": level, "n_pairs": 100, "n_users": N_USERS}
                   for segment in ("overall", "pair:warm", "pair:cold")}
    else:
        values = {"ndcg@10": level, "recall@10": 2 * level, "ndcg@20": level, "recall@20": 2 * level,
                  "n_users": N_USERS}
        metrics = {segment: dict(values) for segment in ("overall", "user:cold", "item:tail")}
        metrics["catalogue"] = {"coverage@10": 0.5, "coverage@20": 0.6, "tail_share@10": 0.1, "tail_share@20": 0.2}
    record = {"status": "complete", "run_id": spec.run_id, "spec": spec.model_dump(mode="json"),
              "metrics": metrics, "params": {"trainable": 10}, "latency": {"median_ms": 1.0},
              "timings": {"train": 1.0}, "fit": {"converged": True, "curve": []},
              "provenance": {"split_hash": "x"}, **(record_extra or {})}
    store.write(spec.run_id, record, per_user)


def _ctr_spec(method: str, seed: int, shots: int = 16) -> RunSpec:
    return RunSpec(dataset="ml-100k", split="ctr_temporal", split_settings={"shots": shots, "shots_seed": seed},
                   backbone="none", backbone_settings={"epochs": 300}, method=method,
                   method_settings={"epochs": 10, "patience": 3}, seed=seed)


def test_a_ctr_run_stopped_at_its_cap_is_marked_in_the_ctr_tables(tmp_path):
    """mf-ctr seed 1 ran 10 of its 10 epochs (fit.converged null, as every stored pointwise record): ‡ on its
    cells of both ctr tables and in LaTeX; din stopped early everywhere: no mark."""
    from bench.report.latex import result_grid

    store = ResultStore(tmp_path / "results")
    specs = []
    for method in ("mf-ctr", "din"):
        for seed in range(3):
            spec = _ctr_spec(method, seed)
            epochs = 10 if (method, seed) == ("mf-ctr", 1) else 6
            training = {"epochs_run": epochs, "curve": [{"epoch": e, "valid_auc": 0.6} for e in range(epochs)],
                        "train_seconds": 1.0}
            _put(store, spec, 0.6 + 0.01 * seed, {"fit": {"converged": None, "curve": training["curve"]},
                                                   "method_info": {"training": training}}, pointwise=True)
            specs.append(spec)
    frame = collect(specs, store)
    assert frame.drop_duplicates("run_id").set_index("run_id")["capped"].to_dict() == {
        s.run_id: (s.method, s.seed) == ("mf-ctr", 1) for s in specs}
    table = ctr_table(frame).set_index("Method")
    assert table.loc["mf-ctr", "ctr_temporal AUC [95% CI]"] == f"0.6100 ± 0.0100 {CAP_MARK}"
    assert table.loc["mf-ctr", "ctr_temporal UAUC"].endswith(CAP_MARK)
    assert CAP_MARK not in table.loc["din", "ctr_temporal AUC [95% CI]"]
    segments = ctr_segment_table(frame).set_index("Method")
    assert segments.loc["mf-ctr", "ctr_temporal cold AUC"] == f"0.6100 ± 0.0100 (n=100) {CAP_MARK}"
    assert CAP_MARK not in segments.loc["din", "ctr_temporal warm AUC"]
    assert cap_note(frame).startswith(f"- {CAP_MARK}: 1 of 6 runs (1 cells) stopped at the epoch cap")
    grid = result_grid(frame, ("auc",), ("overall",))
    rows = {row[0]: row[1] for _, block in grid.blocks for row in block}
    assert r"\ddagger" in rows["MF"] and r"\ddagger" not in rows["DIN"] and grid.facts["cap"]  # display names
    # healthy AUCs: no collapsed seed (0.60 / 0.61 / 0.62 against a median of 0.61)
    assert collapsed_runs(frame).empty


SUITE_YAML = """\
name: conv
description: "Convergence test suite (tests)."
datasets: [ml-100k]
splits: [half_history]
backbones: [lightgcn]
methods: [random, llminit-var, llminit-rand]
seeds: [0, 1, 2]
encoder: minilm
"""
# ndcg@10 per (method, seed): random's seed 2 collapsed (0.02 < 0.5 x median 0.05); llminit-rand's seed 2 is
# low but above half its median (0.026 >= 0.025): not marked; llminit-var healthy
LEVELS = {"random": (0.05, 0.052, 0.02), "llminit-var": (0.06, 0.061, 0.062), "llminit-rand": (0.05, 0.05, 0.026)}


@pytest.fixture
def suite_store(tmp_path):
    path = tmp_path / "conv.yaml"
    path.write_text(SUITE_YAML)
    suite = load_suite(str(path))
    specs = expand(suite)
    store = ResultStore(tmp_path / "results")
    for spec in specs:
        capped = (spec.method, spec.seed) == ("llminit-var", 0)
        _put(store, spec, LEVELS[spec.method][spec.seed], {"fit": {"converged": not capped, "curve": []}})
    return suite, specs, store, path


def test_a_collapsed_seed_is_marked_and_listed_under_every_table(suite_store, tmp_path):
    from bench.report.tables import write_tables

    suite, specs, store, _ = suite_store
    frame = collect(specs, store)
    collapsed = collapsed_runs(frame)
    bad = next(s for s in specs if (s.method, s.seed) == ("random", 2))
    assert collapsed[["run_id", "method", "seed", "metric"]].values.tolist() == [
        [bad.run_id, "random", 2, "ndcg@10"]]
    assert collapsed["value"].iloc[0] == pytest.approx(0.02) and collapsed["median"].iloc[0] == pytest.approx(0.05)
    assert COLLAPSE_FRACTION == 0.5
    assert set(frame.loc[frame["collapsed"], "run_id"]) == {bad.run_id}  # every segment row of that run
    table = main_table(frame, metrics=("ndcg@10",)).set_index("Method")
    column = "ml-100k/half_history ndcg@10"
    assert table.loc["random", column].endswith(COLLAPSE_MARK)
    assert COLLAPSE_MARK not in table.loc["llminit-rand", column]  # 0.026: above half of 0.05
    assert table.loc["llminit-var", column].endswith(CAP_MARK)  # seed 0 at its cap; healthy seeds
    assert COLLAPSE_MARK not in table.loc["llminit-var", column]
    # a gain over the collapsed baseline rests on it
    assert table.loc["llminit-var", "ml-100k/half_history gain ndcg@10"].endswith(COLLAPSE_MARK)
    segments = segment_table(frame).set_index("Method")
    assert segments.loc["random", "user:cold ndcg@10"].endswith(COLLAPSE_MARK)
    assert COLLAPSE_MARK not in segments.loc["llminit-rand", "user:cold ndcg@10"]
    line = (f"`{bad.run_id}` ml-100k/half_history / lightgcn / random, seed 2: ndcg@10 0.0200, cell median "
            "0.0500 (3 seeds)")
    assert collapse_note(collapsed).splitlines()[1] == f"  - {line}"
    assert "below 0.5 x the median of its cell's seeds" in collapse_note(collapsed)

    written = write_tables(suite, specs, store, tmp_path / "tables")
    for name in ("main.md", "segments.md", "significance.md"):
        text = written[name].read_text()
        assert line in text and f"- {COLLAPSE_MARK} (collapsed seed): 1 run(s)" in text, name
    significance = pd.read_csv(written["significance.csv"], dtype=str).set_index("Method")
    assert significance.loc["llminit-var", "ndcg@10 random"] == f"0.0407 {COLLAPSE_MARK}"
    assert COLLAPSE_MARK not in significance.loc["llminit-var", "ndcg@10 method"]
    catalogue = pd.read_csv(written["catalogue.csv"], dtype=str).set_index("Method")
    assert catalogue.loc["random", "coverage@10"] == f"0.5000 ± 0.0000 {COLLAPSE_MARK}"
    assert COLLAPSE_MARK not in catalogue.loc["llminit-rand", "coverage@10"]
    for name in ("main.tex", "main_column.tex", "segments.tex", "segments_column.tex", "significance.tex",
                 "significance_column.tex", "catalogue.tex", "catalogue_column.tex"):
        tex = written[name].read_text()
        body = tex.split("% Needs")[1]
        assert r"\diamond" in body.split(r"\end{tabular}")[0], name  # the mark in a cell
        beneath = body.rsplit(r"\end{tabular}", 1)[1]
        assert rf"\texttt{{{bad.run_id}}}" in beneath and "seed 2: 0.0200 (cell median 0.0500)" in beneath, name
        assert "\\diamond" in tex.split("\\caption{")[1].split("\n")[0], name  # the caption's legend
        assert not [c for c in body if ord(c) > 127], name
    convergence = written["convergence.md"].read_text()
    head, _, counts = [line for line in convergence.splitlines() if line.startswith("|")][:3]
    assert dict(zip(_cells(head), _cells(counts))) == {
        "runs": "9", "in suite": "9", "cap-stopped": "1", "cap-stopped cells": "1", "collapsed": "1",
        "collapsed cells": "1", "at cap: training": "1"}
    assert bad.run_id in convergence


def test_a_suite_with_healthy_seeds_gets_no_collapse_mark(suite_store, tmp_path):
    from bench.report.tables import write_tables

    suite, specs, store, _ = suite_store
    bad = next(s for s in specs if (s.method, s.seed) == ("random", 2))
    _put(store, bad, 0.048)
    frame = collect(specs, store)
    assert collapsed_runs(frame).empty and not frame["collapsed"].any()
    assert COLLAPSE_MARK not in main_table(frame).to_markdown()
    written = write_tables(suite, specs, store, tmp_path / "tables")
    for name, path in written.items():
        if name.endswith((".md", ".tex")) and name != "convergence.md":
            assert COLLAPSE_MARK not in path.read_text() and r"\diamond" not in path.read_text(), name


def test_counts_per_suite_come_from_the_records(suite_store, capsys):
    _, specs, store, path = suite_store
    runs = convergence_frame(specs, store)
    assert len(runs) == 9
    assert convergence_counts(runs, expected=9) == {
        "runs": 9, "in suite": 9, "cap-stopped": 1, "cap-stopped cells": 1, "collapsed": 1, "collapsed cells": 1,
        "at cap: training": 1}
    capped = runs[runs["capped"]].iloc[0]
    assert (capped["method"], capped["seed"], capped["cap_detail"]) == (
        "llminit-var", 0, "training: ran to its epoch cap")
    assert main(["--suite", str(path), "--results", str(store.root), "--runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert dict(zip(_cells(out[0]), _cells(out[2]))) == {
        "suite": str(path), "runs": "9", "in suite": "9", "cap-stopped": "1", "cap-stopped cells": "1",
        "collapsed": "1", "collapsed cells": "1", "at cap: training": "1"}
    assert any("ndcg@10 0.0200 (cell median 0.0500)" in line for line in out)


def test_claims_name_a_collapsed_seed_they_rest_on(suite_store):
    from bench.report.claims import Claim, ClaimsFile, check_claims, claims_table, render_claims

    _, specs, store, _ = suite_store
    claims = ClaimsFile(claims=[
        Claim(id="var-over-random", text="var > random", kind="better", a={"method": "llminit-var"},
              b={"method": "random"}),
        Claim(id="var-over-rand", text="var > rand", kind="better", a={"method": "llminit-var"},
              b={"method": "llminit-rand"})])
    results = check_claims(store, claims)
    bad = next(s for s in specs if (s.method, s.seed) == ("random", 2))
    assert [len(c.collapsed) for r in results for c in r.comparisons] == [1, 0]
    assert bad.run_id in results[0].comparisons[0].collapsed[0]
    table = claims_table(results, claims.alpha).set_index("Claim")
    assert table.loc["var-over-random", "Effect (rel.) [95% CI]"].endswith(COLLAPSE_MARK)
    assert COLLAPSE_MARK not in table.loc["var-over-rand", "Effect (rel.) [95% CI]"]
    text = render_claims(results, claims, "holm", store)
    assert f"{COLLAPSE_MARK} collapsed seed: `{bad.run_id}`" in text


def test_paradigms_table_marks_a_collapsed_seed(tmp_path):
    from bench.report.paradigms import paradigms_frame, paradigms_latex, paradigms_table

    store = ResultStore(tmp_path / "results")
    specs = [RunSpec(dataset="ml-100k", split="temporal_loo", split_settings={"seed": 0}, backbone="sasrec",
                     backbone_settings={"epochs": 3}, method=method, seed=seed)
             for method in ("random", "llm2rec") for seed in range(3)]
    for spec in specs:
        _put(store, spec, 0.01 if (spec.method, spec.seed) == ("llm2rec", 1) else 0.05)
    frame = paradigms_frame(specs, store)
    table = paradigms_table(frame, metrics=("ndcg@10",)).set_index("Method")
    assert table.loc["llm2rec", "temporal_loo N@10"].endswith(COLLAPSE_MARK)
    assert table.loc["random", "temporal_loo N@10"] == "0.0500 ± 0.0000"
    files = paradigms_latex(Suite(name="p", datasets=["ml-100k"], splits=["temporal_loo"], backbones=["sasrec"],
                                  methods=["random"], table="paradigms"), frame, set())
    bad = next(s for s in specs if (s.method, s.seed) == ("llm2rec", 1))
    assert all(rf"\texttt{{{bad.run_id}}}" in tex for tex in files.values())


def test_a_pointwise_seed_at_chance_is_collapsed_by_its_margin_over_half():
    """AUC is judged by its margin over 0.5: a seed at 0.51 in a cell of median 0.69 collapsed (0.01 < 0.5 x 0.19),
    0.62 not (0.12 >= 0.095); a cell at chance (median <= 0.5) marks nobody; NDCG@10 keeps its raw median."""
    from bench.report.convergence import CELL, collapsed_runs

    def frame(metric, values):
        protocol = "pointwise" if metric == "auc" else "ranking"  # the method class's, as `collect` reads it
        return pd.DataFrame([{"run_id": f"r{i}", **{c: "x" for c in CELL}, "seed": i, "segment": "overall",
                              "protocol": protocol, metric: v} for i, v in enumerate(values)])

    hit = collapsed_runs(frame("auc", [0.51, 0.69, 0.70]))
    assert hit["run_id"].tolist() == ["r0"] and hit["median"].tolist() == [0.69]
    assert collapsed_runs(frame("auc", [0.62, 0.69, 0.70])).empty
    assert collapsed_runs(frame("auc", [0.30, 0.49, 0.50])).empty
    assert collapsed_runs(frame("auc", [0.49, 0.52, 0.53])).empty  # a cell near chance: seed noise
    assert collapsed_runs(frame("ndcg@10", [0.0167, 0.0498, 0.0496]))["run_id"].tolist() == ["r0"]
    assert collapsed_runs(frame("ndcg@10", [0.03, 0.0498, 0.0496])).empty


def test_the_protocol_is_the_method_classes_not_a_column(tmp_path):
    """`collect` carries each run's protocol as its method class declares it (`Method.protocol`), and the tables
    and the collapse rule dispatch on it: ranking runs whose records also hold an AUC value stay ranking runs
    (main table, judged on NDCG@10), pointwise runs get the AUC tables."""
    from bench.report.labels import frame_protocol

    store = ResultStore(tmp_path / "results")
    ranking = [RunSpec(dataset="ml-100k", split="half_history", split_settings={"seed": 0}, backbone="lightgcn",
                       backbone_settings={"epochs": 3}, method="random", seed=seed) for seed in range(3)]
    for spec in ranking:  # NDCG@10 healthy in every seed; a stray AUC that would call seed 0 collapsed
        _put(store, spec, 0.05)
        record = store.load(spec.run_id)
        record["metrics"]["overall"]["auc"] = 0.52 if spec.seed == 0 else 0.8
        store.write(spec.run_id, record, store.per_user(spec.run_id))
    frame = collect(ranking, store)
    assert set(frame["protocol"]) == {"ranking"} and frame_protocol(frame) == "ranking" and "auc" in frame
    assert collapsed_runs(frame).empty and not frame["collapsed"].any()
    pointwise = [_ctr_spec("mf-ctr", seed) for seed in range(3)]
    for spec in pointwise:
        _put(store, spec, 0.51 if spec.seed == 0 else 0.7, pointwise=True)
    frame = collect(pointwise, store)
    assert set(frame["protocol"]) == {"pointwise"} and frame_protocol(frame) == "pointwise"
    assert collapsed_runs(frame)["metric"].tolist() == ["auc"]
