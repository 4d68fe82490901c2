"""The cross-paradigm table and the quality / latency trade-off figure, on synthetic run records."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from bench.records import ResultStore
from bench.report.labels import paradigm_of
from bench.report.paradigms import (
    offline_llm_cost,
    paradigms_frame,
    paradigms_table,
    tradeoff_data,
)
from bench.report.stats import LeadTest
from bench.spec import RunSpec

N_USERS = 50


def spec(method, split, backbone, seed):
    return RunSpec(dataset="ml-100k", split=split, split_settings={"seed": 0}, backbone=backbone,
                   backbone_settings={"embedding_size": 64, "epochs": 3, "stopping_step": 2, "train_batch_size": 8,
                                      "learning_rate": 0.001}, method=method,
                   encoder="minilm" if method.startswith(("llminit", "pte")) else None, seed=seed)


def put(store, run, ndcg, latency, info=None, trainable=10, converged=True, sample=0):
    n_users = sample or N_USERS
    per_user = pd.DataFrame({"user": [str(u) for u in range(n_users)], "ndcg@10": np.full(n_users, ndcg)})
    overall = {"recall@10": 2 * ndcg, "recall@20": 3 * ndcg, "ndcg@10": ndcg, "ndcg@20": 1.5 * ndcg,
               "n_users": n_users}
    evaluation = {"test_user_sample": {"users": sample, "of": N_USERS}} if sample else {}
    evaluation["item_cold_start"] = "text" if run.method == "pte" else "id"
    store.write(run.run_id, {"status": "complete", "run_id": run.run_id, "spec": run.model_dump(mode="json"),
                             "metrics": {"overall": overall},
                             "params": {"trainable": trainable, "frozen_online": 7, "frozen_offline": 2_500_000},
                             "latency": {"median_ms": latency}, "timings": {"train": 1.0},
                             "method_info": info or {}, "fit": {"converged": converged, "curve": []},
                             "evaluation": evaluation,
                             "provenance": {"split_hash": "x"}}, per_user)


@pytest.fixture
def runs(tmp_path):
    store = ResultStore(tmp_path / "results")
    specs = []
    llm2rec = {"llm2rec": {"llm_tokens_seen": 24000, "llm_train_seconds": 1000.0}}
    pte = {"pte": {"offline_cost": {"first_tokens": 120000, "first_seconds": 4000.0, "tokens": 0, "seconds": 0.0,
                                    "requested": 3800}}}
    for seed in range(3):
        for method, split, backbone, ndcg, latency, info in (
                ("random", "temporal_loo", "sasrec", 0.06 + 0.001 * seed, 2.0, None),
                ("llm2rec", "temporal_loo", "sasrec", 0.03 + 0.001 * seed, 2.5, llm2rec),
                ("pte", "temporal_loo", "sasrec", 0.07 + 0.001 * seed, 3.0, pte),
                ("random", "cold_users", "sasrec", 0.05, 2.0, None),
                ("random", "temporal_loo", "lightgcn", 0.04, 1.0, None)):
            run = spec(method, split, backbone, seed)
            put(store, run, ndcg, latency, info, converged=not (method == "llm2rec" and seed == 0))
            specs.append(run)
    rerank = spec("tallrec-rerank", "temporal_loo", "lightgcn", 0)
    put(store, rerank, 0.05, 9000.0, sample=20)
    specs.append(rerank)
    return store, specs


def test_paradigm_labels_and_offline_cost():
    assert [paradigm_of(m) for m in ("random", "llminit-var", "llm2rec", "pte-init", "tallrec", "collm-mf")] == [
        "ID", "LLMInit", "LLM2Rec", "PtE", "TALLRec", "CoLLM"]
    def run(method: str, info: dict) -> dict:
        return {"spec": {"method": method}, "method_info": info}

    assert offline_llm_cost(run("llm2rec", {"llm2rec": {"llm_tokens_seen": 5, "llm_train_seconds": 2.0}})) == (5, 2)
    # PtE: what building the profiles cost the first time, not the (free) cache read of this run
    assert offline_llm_cost(run("pte", {"pte": {"offline_cost": {"first_tokens": 9, "first_seconds": 3.0,
                                                                   "tokens": 0, "seconds": 0.0}}})) == (9, 3)
    # a Yes/No model (TALLRec, CoLLM, their rerankers): its LoRA / mapper training, at the top of its facts
    assert offline_llm_cost(run("tallrec", {"offline_cost": {"tokens": 7, "seconds": 1.5, "steps": ["stage1"]},
                                            "stage1": {"tokens": 7}})) == (7, 1.5)
    # each family reads its own record parts (Method.recorded_offline_cost): LLM2Rec's keys mean nothing to PtE
    tokens, seconds = offline_llm_cost(run("pte", {"llm2rec": {"llm_tokens_seen": 5, "llm_train_seconds": 2.0}}))
    assert tokens != tokens and seconds != seconds
    tokens, seconds = offline_llm_cost({"method_info": {}})
    assert tokens != tokens and seconds != seconds


def test_table_rows_cells_marks_and_costs(runs):
    store, specs = runs
    frame = paradigms_frame(specs, store)
    assert len(frame) == 16
    table = paradigms_table(frame, significant={("ml-100k", "temporal_loo", "sasrec", "pte"): "better",
                                                ("ml-100k", "temporal_loo", "sasrec", "llm2rec"): "worse"})
    # ID rows first, then the paradigms in their order
    assert table[["Paradigm", "Backbone", "Method"]].values.tolist() == [
        ["ID", "lightgcn", "random"], ["ID", "sasrec", "random"], ["TALLRec", "lightgcn", "tallrec-rerank"],
        ["LLM2Rec", "sasrec", "llm2rec"], ["PtE", "sasrec", "pte"]]
    # a reranker scored a seeded sample of the test users: its cell says how many
    assert table.set_index("Method").loc["tallrec-rerank", "temporal_loo N@10"] == "0.0500 (n=20)"
    pte = table.set_index("Method").loc["pte"]
    assert pte["temporal_loo N@10"] == "0.0710 ± 0.0010 ↑"  # significantly better; llm2rec's worse: ↓
    assert table.set_index("Method").loc["llm2rec", "temporal_loo N@10"].split(" ")[3] == "↓"
    assert pte["temporal_loo R@20"] == f"{3 * 0.071:.4f} ± 0.0030"
    assert pte["cold_users N@10"] == "—"  # PtE did not run on cold_users here
    assert pte["LLM tokens (offline)"] == "120.00k" and pte["LLM s (offline)"] == "4000"
    assert pte["Frozen offline"] == "2.50M" and pte["Latency ms/user"] == "3.00"
    assert pte["Unseen items"] == "from text" and table.iloc[0]["Unseen items"] == "ID row: init only"
    assert table.set_index("Method").loc["llm2rec", "temporal_loo N@10"].endswith("‡")  # seed 0 hit its cap
    lightgcn = table[(table["Backbone"] == "lightgcn")].iloc[0]
    assert lightgcn["temporal_loo N@10"] == "0.0400 ± 0.0000" and lightgcn["LLM tokens (offline)"] == "—"


def test_tradeoff_data_and_figure(runs, tmp_path):
    from bench.report.figures import tradeoff_figure

    store, specs = runs
    data = tradeoff_data(paradigms_frame(specs, store)).set_index(["split", "backbone", "method"])
    row = data.loc[("temporal_loo", "sasrec", "pte")]
    assert row["mean"] == pytest.approx(0.071) and row["std"] == pytest.approx(0.001)
    assert row["latency_ms"] == 3.0 and row["seeds"] == 3
    paths = tradeoff_figure(store, specs, tmp_path / "figures")
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"] and all(p.stat().st_size > 1000 for p in paths)


def test_paradigms_suite_shares_its_cells_with_the_paradigms_own_suites():
    """A paradigms cell is the run its paradigm's own suite stores (same settings, same id), so the suite
    only runs what no other suite has."""
    from bench.spec import expand, load_suite

    paradigms = {s.label: s.run_id for s in expand(load_suite("paradigms"))}
    shared = 0
    for name in ("warm", "sequential", "pte", "longtail"):
        ids: dict = {}  # a label may name several runs of a suite (a grid row, e.g. pte's heldout_users: none)
        for other in expand(load_suite(name)):
            if other.encoder in (None, "minilm"):
                ids.setdefault(other.label, set()).add(other.run_id)
        for label in set(ids) & set(paradigms):
            assert paradigms[label] in ids[label], label
            shared += 1
    assert shared >= 20
    assert load_suite("paradigms").table == "paradigms"


def test_paradigms_latex_rows_fit_the_tabular_best_per_column_and_compile(runs, tmp_path):
    import shutil
    import subprocess

    from bench.report.paradigms import paradigms_latex
    from bench.spec import load_suite
    from tests.test_latex import _columns, _mean, _outer_tabulars, _rows, _span

    store, specs = runs
    files = paradigms_latex(load_suite("paradigms"), paradigms_frame(specs, store),
                            {("ml-100k", "temporal_loo", "sasrec", "pte"): "better",
                             ("ml-100k", "temporal_loo", "sasrec", "llm2rec"): "worse"}, family=4,
                            lead_test=LeadTest(store))
    assert sorted(files) == ["main.tex", "main_column.tex"]
    assert "\\begin{table*}" in files["main.tex"] and "\\begin{table}" in files["main_column.tex"]
    for tex in files.values():
        (spec, body), = _outer_tabulars(tex)
        width = _columns(spec)
        rows = _rows(body)
        assert rows and all(sum(_span(c) for c in row) == width for row in rows), (width, rows)
    # page-wide: one label column (paradigm (backbone) over the method), then R@10, N@10 per split:
    # temporal_loo N@10 is the 2nd value column; PtE is best, significantly ahead of the next (bold alone)
    def label(cell):
        match = re.search(r"\\begin\{tabular\}\[t\]\{@\{\}l@\{\}\}(.*?)\\\\", cell)
        return match[1] if match else cell

    rows = {label(r[0]): r for r in _rows(_outer_tabulars(files["main.tex"])[0][1])}
    n10 = {name: _mean(row[2]) for name, row in rows.items() if name != "Paradigm (backbone)"}
    assert n10["PtE (SASRec)"] == (0.071, "best") and n10["ID (SASRec)"][1] == ""
    assert "$^{\\uparrow}$" in rows["PtE (SASRec)"][2] and "$^{\\downarrow\\ddagger}$" in rows["LLM2Rec (SASRec)"][2]
    for tex in files.values():  # both marks keyed in every caption, with the test's family and its size
        assert ("$^{\\uparrow}$ / $^{\\downarrow}$ significantly better / worse than ID" in tex
                and "Holm over the 4 comparisons of the significance table" in tex)
    assert "{\\scriptsize PtE}" in rows["PtE (SASRec)"][0]  # the method beneath its paradigm, display names
    # the reranker scored a seeded sample of 20 users: its cell says so beneath, in LaTeX as in Markdown
    assert "{\\scriptsize (n=20, 1 seed)}" in rows["TALLRec (LightGCN)"][1]
    assert "% Key: Warm (LOO) = temporal_loo; Cold users = cold_users" in files["main.tex"]
    # column-wide: the paradigm over its backbone (each pair names one method), split names broken at their
    # underscores, a setting suffix by its value with the key in the caption
    column = {label(r[0]): r for r in _rows(_outer_tabulars(files["main_column.tex"])[0][1])}
    assert "{\\scriptsize SASRec}" in column["PtE"][0] and "Paradigm" in column
    body = files["main_column.tex"].split("\\begin{table}")[1]
    assert "Warm\\\\(LOO)" in body and "temporal" not in body.split("\\par\\smallskip")[0]
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    for name, tex in files.items():
        (tmp_path / name).write_text(tex)
    (tmp_path / "paper.tex").write_text(
        "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n\\begin{document}\nText.\n"
        "\\input{main.tex}\n\\input{main_column.tex}\n\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    if shutil.which("pdftoppm") is not None:  # the column-wide table fits a 241 pt column
        from bench.report.latex_render import compile_table

        result = compile_table(tmp_path / "main_column.tex")
        assert result["kind"] == "column" and result["fits"], result


def test_narrow_split_titles_and_their_key():
    from bench.report.latex import narrow_note, split_title

    assert split_title("longtail", narrow=True) == "longtail"
    assert split_title("temporal_loo", narrow=True) == r"\begin{tabular}[t]{@{}c@{}}temporal\\loo\end{tabular}"
    title = split_title("cold_items [candidates=cold]", narrow=True)
    assert title.endswith(r"items\\[-2pt]{\scriptsize [cold]}\end{tabular}")
    assert split_title("cold_items [candidates=cold]") == (
        r"\begin{tabular}[t]{@{}c@{}}cold\_items\\[-2pt]{\scriptsize [candidates=cold]}\end{tabular}")
    assert narrow_note(["cold_items [candidates=all]", "cold_items [candidates=cold]", "longtail"]) == (
        "[all], [cold]: candidates")


def test_write_tables_uses_the_paradigms_layout_when_the_suite_asks(runs, tmp_path):
    from bench.report.tables import write_tables
    from bench.spec import Suite

    store, specs = runs
    common = {"name": "p", "datasets": ["ml-100k"], "splits": ["temporal_loo"], "backbones": ["sasrec"],
              "methods": ["random"]}
    grid = write_tables(Suite(**common), specs, store, tmp_path / "grid")
    paradigms = write_tables(Suite(**common, table="paradigms"), specs, store, tmp_path / "paradigms")
    assert "| Paradigm " not in grid["main.md"].read_text()
    text = paradigms["main.md"].read_text()
    assert text.startswith("| Paradigm ") and "LLM tokens (offline)" in text
    assert "Paradigm" in paradigms["main.tex"].read_text() and "Paradigm" not in grid["main.tex"].read_text()


def test_latency_timed_on_a_loaded_machine_is_marked(runs):
    """A probe run while the 1-minute load average exceeded the cores is an upper bound: its cell says so,
    in the table, in LaTeX and in the note; a record that did not measure the load is never marked."""
    from bench.report.paradigms import paradigms_grid
    from bench.report.tables import LOAD_MARK, latency_loaded, load_note

    store, specs = runs
    assert not latency_loaded({"latency": {"median_ms": 2.0}})
    assert not latency_loaded({"latency": {"median_ms": 2.0, "load_1min": 2.0, "cpu_count": 2}})
    assert latency_loaded({"latency": {"median_ms": 2.0, "load_1min": 2.9, "cpu_count": 2}})
    loaded = [s for s in specs if s.method == "llm2rec" and s.seed == 1][0]
    record = store.load(loaded.run_id)
    record["latency"].update(load_1min=3.1, cpu_count=2)
    store.write(loaded.run_id, record, store.per_user(loaded.run_id))
    frame = paradigms_frame(specs, store)
    table = paradigms_table(frame).set_index("Method")
    assert table.loc["llm2rec", "Latency ms/user"] == f"2.50 {LOAD_MARK}"
    assert table.loc["pte", "Latency ms/user"] == "3.00"
    assert load_note(frame).startswith(f"- {LOAD_MARK} (latency): 1 of 16 runs")
    grid = paradigms_grid(frame)
    assert grid.facts["loaded"] and any("2.5$^{*}$" in row for _, rows in grid.blocks for row in rows)
    data = tradeoff_data(frame).set_index(["split", "backbone", "method"])
    assert data.loc[("temporal_loo", "sasrec", "llm2rec"), "loaded"]  # hollow marker in the figure
    assert not data.loc[("temporal_loo", "sasrec", "pte"), "loaded"]


def test_latency_probe_records_its_conditions():
    from bench.runner import _latency

    class Flat:
        def score(self, query):
            return np.zeros((len(query.users), 3), dtype=np.float32)

    latency = _latency(Flat(), np.array(["1", "2", "3"]))
    assert latency["n_users"] == 3 and latency["threads"] >= 1 and latency["cpu_count"] >= 1
    assert latency["load_1min"] >= 0


def test_markdown_shows_the_page_latex_columns_with_display_names_and_missing_kinds(runs):
    """The Markdown paradigms table is the page-wide LaTeX grid as text: R@10 and N@10 per split (the CSV keeps
    the four metrics), how a row scores unseen items (short values, keyed in the notes), the costs; display
    names (the ids in the key); a cell the suite defines without a record is "not run", one it does not
    define "n/a"; a cell on fewer users or seeds than its column says so."""
    from bench.report.labels import key_line
    from bench.report.paradigms import paradigms_markdown, paradigms_notes

    store, specs = runs
    frame = paradigms_frame(specs, store)
    missing = spec("pte", "cold_users", "sasrec", 0)  # defined by the suite, never stored
    defined = [(s.dataset, s.split, s.backbone, s.method) for s in [*specs, missing]]
    table, grid = paradigms_markdown(frame, {("ml-100k", "temporal_loo", "sasrec", "pte"): "better"},
                                     defined=defined, lead_test=LeadTest(store))
    assert list(table.columns) == [
        "Paradigm", "Backbone", "Method", "Warm (LOO): Recall@10", "Warm (LOO): NDCG@10", "Cold users: Recall@10",
        "Cold users: NDCG@10", "Unseen items", "Cost: Trainable", "Cost: ms/user", "Cost: LLM tokens (offline)"]
    rows = table.set_index("Method")
    assert rows.loc["PtE", "Warm (LOO): NDCG@10"] == "**0.0710** ± 0.0010 ↑"  # ahead of every other row
    assert rows.loc["PtE", "Cold users: NDCG@10"] == "not run"  # defined, no record
    assert rows.loc["LLM2Rec", "Cold users: NDCG@10"] == "n/a"  # not a cell of the suite
    assert rows.loc["TALLRec (rerank)", "Warm (LOO): NDCG@10"] == "0.0500 (n=20, 1 seed)"
    assert rows.loc["PtE", "Unseen items"] == "text" and rows.loc["LLM2Rec", "Cost: LLM tokens (offline)"] == "24k"
    assert table.iloc[0]["Unseen items"] == "random ID" and table.iloc[0]["Cost: LLM tokens (offline)"] == "n/a"
    notes = paradigms_notes(grid, latex=False)
    assert any(n.startswith("Unseen items: how a row scores") and "random ID = its ID embedding" in n for n in notes)
    assert key_line(grid.facts["used"]).startswith("Key: Warm (LOO) = temporal_loo; Cold users = cold_users;")
    assert "ID = random" in key_line(grid.facts["used"])


def test_the_longtail_split_is_shown_by_its_tail_segments(tmp_path):
    """longtail's overall numbers are temporal_loo's: its columns show the tail users (user:cold) and tail items
    (item:tail), in Markdown as in LaTeX, while the CSV table keeps the overall ones."""
    from bench.report.paradigms import paradigms_latex, paradigms_markdown
    from bench.spec import Suite

    store = ResultStore(tmp_path / "results")
    specs = []
    for seed in range(2):
        run = spec("random", "longtail", "sasrec", seed)
        put(store, run, 0.05, 2.0)
        record = store.load(run.run_id)
        record["metrics"]["user:cold"] = {"recall@10": 0.2, "ndcg@10": 0.1, "n_users": 30}
        record["metrics"]["item:tail"] = {"recall@10": 0.02, "ndcg@10": 0.01, "n_users": 400}
        store.write(run.run_id, record, store.per_user(run.run_id))
        specs.append(run)
    frame = paradigms_frame(specs, store)
    table, _ = paradigms_markdown(frame)
    row = table.iloc[0]
    assert row["Long tail: tail users Recall@10"] == "0.2000 ± 0.0000"
    assert row["Long tail: tail items NDCG@10"] == "0.0100 ± 0.0000"
    assert not any(c.startswith("Long tail: Recall") for c in table.columns)
    assert paradigms_table(frame).iloc[0]["longtail N@10"] == "0.0500 ± 0.0000"  # the CSV: overall
    tex = paradigms_latex(Suite(name="p", datasets=["ml-100k"], splits=["longtail"], backbones=["sasrec"],
                                methods=["random"], table="paradigms"), frame, set())["main.tex"]
    assert "tail users" in tex and "0.2000" in tex and "0.0500" not in tex.split("\\begin{tabular}")[1]
