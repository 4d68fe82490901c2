r"""The LaTeX tables (bench.report.latex) on synthetic run records of a small suite: every row of every
tabular has the tabular's column count (\multicolumn spans counted), bold sits on the best of its column within a
backbone only where the best is significantly ahead of the next (a tied best bolds every tied cell), cells print
display names, --metrics / --columns select exactly what was asked and bad values exit 2 with one line, p-values
are printed for humans, captions are never cut, and the .tex compiles where pdflatex exists."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.records import ResultStore
from bench.report.latex import caption_parts, escape, leaders
from bench.report.tables import collect, significance_results, write_tables
from bench.spec import expand, load_suite

N_USERS = 120
SUITE_YAML = """\
name: tiny
description: "Tiny synthetic suite (tests): two splits, LightGCN and MF; random vs LLMInit-rand/-var. Second sentence."
datasets: [ml-100k]
splits: [half_history, new_users_fewshot]
backbones: [lightgcn, mf]
methods: [random, llminit-rand, llminit-var]
seeds: [0, 1, 2]
encoder: minilm
"""
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def _draw(*key) -> float:
    """A level in [0.05, 0.45], fixed by the key (str hash is salted per process)."""
    return 0.05 + 0.4 * int(hashlib.sha256(repr(key).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _level(spec, metric: str, segment: str) -> float:
    if (spec.split, spec.backbone, metric, segment) == ("half_history", "mf", "recall@20", "overall"):
        return {"random": 0.30, "llminit-rand": 0.30, "llminit-var": 0.10}[spec.method]  # a tie for best
    if (spec.backbone, spec.method, metric, segment) == ("lightgcn", "llminit-var", "ndcg@10", "overall"):
        return 0.40  # far above random: significant on both splits
    if (spec.backbone, spec.method, metric, segment) == ("lightgcn", "random", "ndcg@10", "overall"):
        return 0.20
    return _draw(spec.split, spec.backbone, spec.method, metric, segment)


def _write(store: ResultStore, spec, capped: bool) -> None:
    rng = np.random.default_rng(int(spec.run_id[:8], 16))
    per_user = pd.DataFrame({"user": [str(u) for u in range(N_USERS)],
                             "ndcg@10": np.clip(_level(spec, "ndcg@10", "overall")
                                                + rng.normal(0, 0.05, N_USERS), 0, 1)})
    segments = ["overall", "user:cold", "item:head", "item:tail"]
    if spec.split == "half_history":  # the few-shot split has no warm users, as the real one
        segments.insert(1, "user:warm")
    metrics = {}
    for segment in segments:
        values = {m: _level(spec, m, segment) + 0.001 * spec.seed for m in METRICS}
        metrics[segment] = values | {"n_users": N_USERS}
    metrics["overall"]["ndcg@10"] = float(per_user["ndcg@10"].mean())
    store.write(spec.run_id, {"status": "complete", "run_id": spec.run_id, "spec": spec.model_dump(mode="json"),
                              "metrics": metrics, "params": {"trainable": 10}, "latency": {"median_ms": 1.0},
                              "timings": {"train": 1.0}, "fit": {"converged": not capped, "curve": []},
                              "provenance": {"split_hash": "x"}}, per_user)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The suite file, its store (one capped run: sgl-free mf / llminit-rand / half_history, seed 1) and
    the LaTeX tables written from it."""
    root = tmp_path_factory.mktemp("latex")
    suite_path = root / "tiny.yaml"
    suite_path.write_text(SUITE_YAML)
    suite = load_suite(str(suite_path))
    specs = expand(suite)
    store = ResultStore(root / "results")
    for spec in specs:
        _write(store, spec, capped=(spec.backbone, spec.method, spec.split, spec.seed)
               == ("mf", "llminit-rand", "half_history", 1))
    written = write_tables(suite, specs, store, root / "tables", formats=("latex",))
    return {"root": root, "suite": str(suite_path), "specs": specs, "store": store, "written": written}


# --- a small tabular reader ------------------------------------------------------------------------------

def _braced(text: str, start: int) -> tuple[str, int]:
    """The balanced {...} group opening at text[start]; returns its content and the index after it."""
    assert text[start] == "{", text[start:start + 20]
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1:i], i + 1
    raise AssertionError("unbalanced braces")


def _outer_tabulars(tex: str) -> list[tuple[str, str]]:
    """(column spec, body) of each outermost tabular; nested ones (a value over its std) stay in the body."""
    out, depth = [], 0
    for match in re.finditer(r"\\(begin|end)\{tabular\}", tex):
        if match[1] == "begin":
            if depth == 0:
                start = match.end()
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                head = tex[start:match.start()]
                head = re.sub(r"^\[\w\]", "", head)
                spec, rest = _braced(head, 0)
                out.append((spec, head[rest:]))
    return out


def _columns(spec: str) -> int:
    spec = re.sub(r"[@p]\{[^{}]*(\{\})?[^{}]*\}", lambda m: "p" if m[0][0] == "p" else "", spec)
    return sum(spec.count(c) for c in "lcrp")


def _rows(body: str) -> list[list[str]]:
    """Rows as cell lists: nested tabulars masked, rules dropped, split on unescaped &."""
    nested = []

    def mask(match):
        nested.append(match[0])
        return f"NESTED{len(nested) - 1}X"

    flat = re.sub(r"\\begin\{tabular\}\[t\]\{@\{\}[lcr]@\{\}\}.*?\\end\{tabular\}", mask, body, flags=re.S)
    rows = []
    for chunk in flat.split(r"\\"):
        chunk = re.sub(r"^\s*((\\(toprule|midrule|bottomrule)|\\cmidrule\(lr\)\{\d+-\d+\})\s*)*", "", chunk)
        if chunk.strip():
            cells = re.split(r"(?<!\\)&", chunk)
            rows.append([re.sub(r"NESTED(\d+)X", lambda m: nested[int(m[1])], c).strip() for c in cells])
    return rows


def _span(cell: str) -> int:
    match = re.match(r"\\multicolumn\{(\d+)\}", cell)
    return int(match[1]) if match else 1


def _mean(cell: str) -> tuple[float, str] | None:
    """A value cell's printed mean and its mark: "best", "second" or ""."""
    match = re.search(r"(\\textbf\{|\\underline\{)?(\d\.\d{4})", cell)
    if not match:
        return None
    return float(match[2]), {"\\textbf{": "best", "\\underline{": "second", None: ""}[match[1]]


def _data_blocks(body: str, n_labels: int, block_rows: bool) -> list[list[list[str]]]:
    """Data rows grouped by backbone block (split at \\midrule), header rows left out."""
    parts = body.split(r"\midrule")[1:]  # the first \midrule closes the header
    blocks = []
    for part in parts:
        rows = [r for r in _rows(part) if not r[0].startswith(r"\multicolumn")]
        if rows:
            blocks.append(rows)
    return blocks


# --- tests ----------------------------------------------------------------------------------------------

def test_every_row_has_the_tabulars_column_count(tiny):
    names = sorted(tiny["written"])
    assert [n for n in names if n.endswith(".tex")] == [
        "main.tex", "main_column.tex", "segments.tex", "segments_column.tex", "significance.tex",
        "significance_column.tex"]
    for name in names:
        tex = tiny["written"][name].read_text()
        assert tex.count(r"\begin{table*}" if "_column" not in name else r"\begin{table}") == 1
        tabulars = _outer_tabulars(tex)
        assert len(tabulars) == 1, name
        spec, body = tabulars[0]
        n = _columns(spec)
        rows = _rows(body)
        # 2 header rows + 6 (backbone, method) rows (+ 2 backbone rows column-wide); significance: 2 + 2
        # (dataset / split) block rows + 8 comparisons (column-wide: 4 dataset / split / backbone blocks)
        kind = name.removesuffix(".tex").removesuffix("_column")
        assert len(rows) == {"main": 8, "segments": 8, "significance": 12}[kind] + (
            2 if "_column" in name else 0), (name, len(rows))
        for row in rows:
            assert sum(_span(c) for c in row) == n, (name, n, row)
        for inner in re.findall(r"\\begin\{tabular\}\[t\]\{@\{\}[lcr]@\{\}\}(.*?)\\end\{tabular\}", body, re.S):
            assert "&" not in inner and inner.count(r"\\") == 1  # a nested cell: one column, two lines
        assert "\\label{tab:tiny-" in tex and "\\caption{Tiny synthetic suite (tests)" in tex
        assert "% Key: Half history = half_history; New users (few-shot) = new_users_fewshot" in tex
        assert "Second sentence" not in tex.split("\\caption{")[1].split("\n")[0]  # first sentence only
        assert "% Needs \\usepackage{booktabs}" in tex and "% Sources: 36 run records" in tex
    main_tex = tiny["written"]["main.tex"].read_text()
    header = _rows(_outer_tabulars(main_tex)[0][1])[:2]
    # the label columns' empty titles under one empty \multicolumn (Styler's header)
    assert header[0] == [r"\multicolumn{2}{c}{}", r"\multicolumn{4}{c}{Half history}",
                         r"\multicolumn{4}{c}{\begin{tabular}[t]{@{}c@{}}New users\\[-2pt]{\scriptsize (few-shot)}"
                         r"\end{tabular}}"]
    assert header[1] == ["Backbone", "Method"] + ["R@10", "N@10", "R@20", "N@20"] * 2
    assert r"\cmidrule(lr){3-6} \cmidrule(lr){7-10}" in main_tex
    segments = _rows(_outer_tabulars(tiny["written"]["segments.tex"].read_text())[0][1])[:2]
    # the few-shot split has no warm users: that sub-column is left out, not printed as a column of --
    assert segments[0][1] == r"\multicolumn{5}{c}{Half history}" and segments[0][2].startswith(r"\multicolumn{4}{c}")
    assert segments[1][2:] == ["all", "warm", "cold", "head", "tail", "all", "cold", "head", "tail"]


def test_bold_is_the_best_of_its_backbone_where_significantly_ahead(tiny):
    """Bold sits on the best printed mean of its column within a backbone and the cells tied with it; no underline. A tie
    for best (mf, half_history, R@20: random = llminit-rand = 0.30 + seed jitter, llminit-var far below) bolds
    both tied cells, not one alone; on lightgcn the best N@10 (llminit-var at 0.40 against 0.20) is bold alone."""
    frame = collect(tiny["specs"], tiny["store"])
    overall = frame[frame["segment"] == "overall"]
    for name, n_labels in (("main.tex", 2), ("main_column.tex", 1)):
        tex = tiny["written"][name].read_text()
        assert "\\underline" not in tex and "underlined" not in tex
        spec, body = _outer_tabulars(tex)[0]
        metrics = METRICS if name == "main.tex" else METRICS[:2]
        columns = [(s, m) for s in ("half_history", "new_users_fewshot") for m in metrics]
        blocks = _data_blocks(body, n_labels, name != "main.tex")
        assert len(blocks) == 2 and [len(b) for b in blocks] == [3, 3]
        for backbone, rows in zip(("lightgcn", "mf"), blocks):
            methods = [row[n_labels - 1] for row in rows]
            assert methods == ["ID", "LLMInit-rand", "LLMInit-var"]  # display names, not ids
            for j, (split, metric) in enumerate(columns):
                cells = [_mean(row[n_labels + j]) for row in rows]
                for method, (value, _) in zip(("random", "llminit-rand", "llminit-var"), cells):
                    part = overall[(overall["backbone"] == backbone) & (overall["method"] == method)
                                   & (overall["split"] == split)]
                    assert len(part) == 3 and value == pytest.approx(round(part[metric].mean(), 4), abs=1e-9)
                # bold: the best and the cells tied with it, never a cell below one that is not bold
                bold = [v for v, mark in cells if mark == "best"]
                plain = [v for v, mark in cells if mark != "best"]
                assert not bold or (max(v for v, _ in cells) in bold and min(bold) >= max(plain, default=0)), (
                    backbone, split, metric, cells)
    rows = _data_blocks(_outer_tabulars(tiny["written"]["main.tex"].read_text())[0][1], 2, False)
    # the tie (mf, half_history, R@20): both bold, the third not; a lone best where it is far ahead
    assert [_mean(row[2 + 2]) for row in rows[1]] == [(0.301, "best"), (0.301, "best"), (0.101, "")]
    assert [_mean(row[2 + 1])[1] for row in rows[0]] == ["", "", "best"]  # lightgcn N@10: llminit-var alone
    main_tex = tiny["written"]["main.tex"].read_text()
    assert "Bold: best per backbone where significantly ahead of the next" in main_tex
    assert "a tie for best bolds every tied cell" in main_tex


def test_leaders_bold_the_best_only_where_it_is_significantly_ahead():
    """`leaders`: the best alone where it is ahead of the next; a statistical tie bolds the best and the tied
    cells down to the first one the best is ahead of; nothing where no cell is behind the best, without a test
    or with fewer than two values."""
    always, never = (lambda a, b: True), (lambda a, b: False)
    assert leaders([0.3, 0.2, 0.1], always) == {0}
    assert leaders([0.2, 0.3, 0.1], lambda a, b: b == 2) == {0, 1}  # 0.3 not ahead of 0.2: tied, both bold
    assert leaders([0.3, 0.29, 0.28, 0.1], lambda a, b: b == 3) == {0, 1, 2}
    assert leaders([0.3, 0.3, 0.1], always) == {0, 1}  # equal printed values are tied whatever the test
    assert leaders([0.3, 0.2, 0.1], never) == set()  # no cell significantly behind: no winner
    assert leaders([0.3, 0.2], None) == set() and leaders([0.5], always) == set()
    assert leaders([None, 0.2, float("nan"), 0.1], always) == {1}


def test_a_tied_best_is_not_bolded_alone_in_a_synthetic_frame(tmp_path):
    """A frame whose two best rows have the same per-user values up to noise (a statistical tie) and a third
    far below: the LeadTest (the primary test on the per-user sidecars) bolds both tied rows, in LaTeX and in
    the Markdown cell; with the second far below, the best alone."""
    from bench.report.latex import grid_frame, result_grid
    from bench.report.stats import LeadTest
    from bench.spec import RunSpec

    store = ResultStore(tmp_path / "results")
    rows = []
    for method, level in (("random", 0.300), ("llminit-var", 0.301), ("llminit-rand", 0.10)):
        for seed in range(3):
            spec = RunSpec(dataset="ml-100k", split="half_history", split_settings={"seed": 0}, backbone="lightgcn",
                           backbone_settings={"epochs": 3}, method=method,
                           encoder="minilm" if method != "random" else None, seed=seed)
            rng = np.random.default_rng(seed * 7 + len(rows))
            values = np.clip(level + rng.normal(0, 0.1, N_USERS), 0, 1)
            per_user = pd.DataFrame({"user": [str(u) for u in range(N_USERS)], "ndcg@10": values})
            store.write(spec.run_id, {"status": "complete", "run_id": spec.run_id, "spec": spec.model_dump(mode="json"),
                                      "metrics": {"overall": {"ndcg@10": float(values.mean()), "n_users": N_USERS}},
                                      "params": {"trainable": 10}, "latency": {"median_ms": 1.0},
                                      "timings": {"train": 1.0}, "provenance": {"split_hash": "x"}}, per_user)
            rows.append(spec)
    frame = collect(rows, store)
    grid = result_grid(frame, ("ndcg@10",), ("overall",), lead_test=LeadTest(store))
    cells = [row[1] for row in grid.blocks[0][1]]
    assert [("\\textbf" in c) for c in cells] == [True, True, False]
    assert [plain.startswith("**") for plain in grid_frame(grid).iloc[:, -1]] == [True, True, False]
    alone = result_grid(frame[frame["method"] != "random"], ("ndcg@10",), ("overall",), lead_test=LeadTest(store))
    assert [("\\textbf" in row[1]) for row in alone.blocks[0][1]] == [True, False]
    # without a test nothing is bold
    assert not any("\\textbf" in row[1] for row in result_grid(frame, ("ndcg@10",), ("overall",)).blocks[0][1])


def test_marks_are_latex_symbols_and_p_values_are_for_humans(tiny):
    main_tex = tiny["written"]["main.tex"].read_text()
    rows = _data_blocks(_outer_tabulars(main_tex)[0][1], 2, False)
    # lightgcn / llminit-var is far above random on N@10: ↑ on both splits' N@10 cells, and nowhere else
    lightgcn_var = rows[0][2]
    assert lightgcn_var[1] == "LLMInit-var"
    assert [("$^{\\uparrow}$" in c) for c in lightgcn_var[2:]] == [False, True, False, False] * 2
    assert "\\dagger" not in main_tex
    # the key under the table: both directions, the test and the family with its size
    results = significance_results(tiny["specs"], tiny["store"])
    assert (r"$^{\uparrow}$ / $^{\downarrow}$ significantly better / worse than ID" in main_tex
            and f"Holm over the {len(results)} comparisons of the significance table" in main_tex)
    # the capped run (mf / llminit-rand / half_history): ‡ on its four half_history cells only
    mf_rand = rows[1][1]
    assert mf_rand[1] == "LLMInit-rand"
    assert [("\\ddagger" in c) for c in mf_rand[2:]] == [True] * 4 + [False] * 4
    assert main_tex.count("\\ddagger") == 4 + 1  # + the caption's legend
    assert "\\pm" in lightgcn_var[3]  # std beneath the mean (page width); none in the column version
    assert "\\pm" not in _outer_tabulars(tiny["written"]["main_column.tex"].read_text())[0][1]
    significance = tiny["written"]["significance.tex"].read_text()
    spec, body = _outer_tabulars(significance)[0]
    head = _rows(body)[1]
    # Seeds (needed) is left out where no row's seeds dominate its uncertainty (every cell here, 3 seeds)
    assert head[:-1] == ["Backbone", "Method", "method", "ID", r"Gain \%", r"95\% CI", "$p$",
                         r"$p_{\mathrm{corr}}$", "Wilcoxon", "$t$ (seeds)", r"MDE \%", "Seeds"][:len(head) - 1]
    assert head[-1] == "Sig." and len(head) in (12, 13)
    assert "seeds $\\times$ users" in body and "secondary $p$" in body
    data = [r for r in _rows(body)[2:] if not r[0].startswith(r"\multicolumn")]
    assert len(data) == len(results) == 8
    for row, (_, r) in zip(data, results.iterrows()):
        for cell in row[6:10]:
            assert re.fullmatch(r"\$<\$0\.001|[01]\.\d{3}|--", cell), cell
        expected = {"better": "$\\uparrow$", "worse": "$\\downarrow$"}.get(r["direction"], "")
        assert row[-1] == expected and (r["p_corr"] < 0.05) == bool(expected)
    assert sum(row[-1] == "$\\uparrow$" for row in data) >= 2  # lightgcn / llminit-var on both splits
    assert f"Holm over the {len(results)} comparisons of this table" in significance
    for name, path in tiny["written"].items():
        text = path.read_text().split("% Needs")[1]
        assert not re.search(r"\de-\d", text) and not re.search(r"&\s*(yes|no)\s*(&|\\\\)", text), name
        assert not re.search(r"[^\x00-\x7f]", text), name  # every symbol escaped to LaTeX


def test_escape_and_caption_lead():
    assert escape("half_history & 50% #1 {x} ~ ^ <0.001 ± − † —") == (
        r"half\_history \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} $<$0.001 $\pm$ $-$ "
        r"$^{\dagger}$ ---")
    # a long first sentence: its first clause leads the caption, the rest goes beneath the table, whole
    lead, detail = caption_parts(load_suite("coldstart").description)
    assert lead == "LLMInit cold start on ml-100k"
    assert detail.startswith("half_history (LLMInit 4.4) and few-shot new users (new_users_fewshot: held-out")
    assert detail.endswith("LightGCN, SGL, SGCL; random vs LLMInit-rand/-uni/-var")
    assert caption_parts("One. Two.") == ("One", "")
    text = "word " * 80  # no clause to cut at: the whole sentence, never an ellipsis
    assert caption_parts(text, 50) == (text.strip(), "")


def test_captions_are_never_cut(tiny):
    for name, path in tiny["written"].items():
        tex = path.read_text()
        caption = tex.split("\\caption{")[1].split("\n")[0]
        assert "\\ldots" not in caption and "…" not in caption, name


def test_metrics_and_columns_select_exactly_what_was_asked(tiny, capsys):
    out = tiny["root"] / "selected"
    argv = ["table", "--suite", tiny["suite"], "--results", str(tiny["store"].root), "--out", str(out),
            "--format", "latex", "--metrics", "ndcg@20,recall@10", "--columns", "new_users_fewshot,user:cold",
            "--latex-width", "page"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in (out / "tiny").glob("*.tex")) == ["main.tex", "segments.tex", "significance.tex"]
    for name in ("main.tex", "segments.tex"):
        spec, body = _outer_tabulars((out / "tiny" / name).read_text())[0]
        rows = _rows(body)
        assert rows[0][1:] == [r"\multicolumn{2}{c}{\begin{tabular}[t]{@{}c@{}}New users\\[-2pt]"
                               r"{\scriptsize (few-shot)}\end{tabular}}"]
        assert "over 3 seeds, ml-100k; cold users only." in (out / "tiny" / name).read_text()
        assert rows[1] == ["Backbone", "Method", "N@20", "R@10"] and _columns(spec) == 4
        assert all(sum(_span(c) for c in r) == 4 for r in rows)
    significance = _rows(_outer_tabulars((out / "tiny" / "significance.tex").read_text())[0][1])
    assert [r[0] for r in significance[2:] if r[0].startswith(r"\multicolumn")] == [  # block title rows
        r"\multicolumn{13}{l}{\textit{ml-100k / New users (few-shot)}}"]
    assert r"\begin{table*}" in printed and "half\\_history" not in printed.split("% Needs")[1]
    # a dataset/split group by its full name, segments of the main table by default (overall only)
    assert main(argv[:-6] + ["--columns", "ml-100k/half_history", "--latex-width", "column"]) == 0
    capsys.readouterr()
    rows = _rows(_outer_tabulars((out / "tiny" / "main_column.tex").read_text())[0][1])
    assert rows[0][1:] == [r"\multicolumn{2}{c}{Half history}"] and rows[1] == ["Method", "R@10", "N@10"]


@pytest.mark.parametrize("flag,value,named", [
    ("--metrics", "recal@10", "unknown --metrics value 'recal@10'; did you mean 'recall@10'?"),
    ("--metrics", "auc", "unknown --metrics value 'auc'"),  # a pointwise metric in a ranking suite
    ("--columns", "user:cld", "unknown --columns value 'user:cld'"),
    ("--columns", "ml-1m/half_history", "unknown --columns value 'ml-1m/half_history'"),
    ("--latex-width", "wide", "unknown --latex-width value 'wide'"),
])
def test_bad_selection_exits_2_with_one_line_before_any_work(tiny, capsys, flag, value, named):
    out = tiny["root"] / f"bad-{flag}-{value}".replace(":", "").replace("/", "")
    argv = ["table", "--suite", tiny["suite"], "--results", str(tiny["store"].root), "--out", str(out),
            flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bench: error: {named}") and "valid choices: " in err
    if flag == "--metrics":
        assert "ndcg@10, ndcg@20" in err and "auc" not in err.split("valid choices: ")[1]
    if flag == "--columns":
        assert "ml-100k/half_history" in err and "user:cold" in err and "new_users_fewshot" in err
    assert not out.exists()  # nothing written


def test_render_without_the_tools_exits_2_naming_them(tiny, capsys, monkeypatch):
    import bench.report.latex_render as latex_render

    monkeypatch.setattr(latex_render.shutil, "which", lambda tool: None if tool == "pdftoppm" else "/bin/true")
    out = tiny["root"] / "no-tools"
    argv = ["table", "--suite", tiny["suite"], "--results", str(tiny["store"].root), "--out", str(out), "--render"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--render needs pdflatex and pdftoppm on PATH; missing: pdftoppm (" in err
    assert not out.exists()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_generated_tex_compiles_in_a_two_column_paper_and_fits(tiny, tmp_path):
    from bench.report.latex_render import compile_table

    folder = tiny["written"]["main.tex"].parent
    names = sorted(p.name for p in folder.glob("*.tex"))
    (tmp_path / "paper.tex").write_text(
        "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n\\begin{document}\nText.\n"
        + "".join(f"\\input{{{folder / name}}}\n" for name in names) + "\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert "multiply defined" not in log and "Undefined control sequence" not in log
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm is not installed")
    for name in names:  # every generated table fits its width
        width = 241.0 if name.endswith("_column.tex") else 506.0
        result = compile_table(folder / name, tmp_path / f"{name}.png")
        assert result["target_pt"] == width and len(result["tabular_pt"]) == 1
        assert 100 < result["tabular_pt"][0] <= width and result["fits"], result
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_wide_family_table_of_few_rows_is_set_transposed():
    from bench.report.latex import frame_grid, tabular

    table = pd.DataFrame([{"Dataset": "ml-100k", "Split": "cold_users", "Method": "pte", "Users": 938,
                           "Items": 1007, "Tokens/s": 30.3, "Converged": "no", "Distance": "r1: user 0.556"}])
    spec, body = _outer_tabulars(tabular(frame_grid(table)))[0]
    rows = _rows(body)
    assert _columns(spec) == 2 and all(sum(_span(c) for c in r) == 2 for r in rows)
    assert rows[0] == ["Dataset / Split / Method", r"\begin{tabular}[t]{@{}r@{}}ml-100k\\cold\_users\\pte\end{tabular}"]
    assert rows[1:] == [["Users", "938"], ["Items", "1007"], ["Tokens/s", "30.3"], ["Converged", "no"],
                        ["Distance", "r1: user 0.556"]]
    flat = pd.concat([table] * 5, ignore_index=True)  # five rows: set as it is
    spec, body = _outer_tabulars(tabular(frame_grid(flat)))[0]
    assert spec == "@{}lrrrll@{}" and len(_rows(body)) == 6  # one label column: the method over the rest
    assert _rows(body)[1][0] == r"\begin{tabular}[t]{@{}l@{}}pte\\[-2pt]{\scriptsize ml-100k, cold\_users}\end{tabular}"


def test_family_tables_name_their_constant_identity_in_the_caption_and_column_cells_keep_the_mean():
    from bench.report.latex import compact_family_table

    table = pd.DataFrame({"Dataset": ["ml-100k", "ml-100k"], "Split": ["longtail", "longtail"],
                          "Backbone": ["sasrec", "gru4rec"], "Method": ["random", "random"],
                          "coverage@10": ["0.5962 ± 0.0444", "0.6326 ± 0.0141"], "Runs": [3, 3]})
    page, constants = compact_family_table(table, page=True)
    assert constants == ["ml-100k", "longtail"] and list(page.columns) == ["Backbone", "Method", "coverage@10", "Runs"]
    assert page["coverage@10"].tolist() == ["0.5962 ± 0.0444", "0.6326 ± 0.0141"]
    column, _ = compact_family_table(table, page=False)
    assert column["coverage@10"].tolist() == ["0.5962", "0.6326"] and column["Runs"].tolist() == [3, 3]
    one_row, constants = compact_family_table(table.head(1), page=True)  # one row: nothing is "constant"
    assert constants == [] and one_row.equals(table.head(1))


def test_a_grid_wider_than_its_width_is_split_between_column_groups():
    from bench.report.latex import Grid, split_grid, tabulars

    sizes = [5, 4, 5, 5, 4]
    groups = [(f"split{g}", [f"m{g}.{j}" for j in range(n)]) for g, n in enumerate(sizes)]
    values = [f"v{g}.{j}" for g, n in enumerate(sizes) for j in range(n)]
    rows = [["sasrec", "random"] + [f"{v}r0" for v in values], ["", "pte"] + [f"{v}r1" for v in values]]
    grid = Grid(["Backbone", "Method"], groups, [("", rows)])
    parts = split_grid(grid, 12)
    assert [[title for title, _ in p.groups] for p in parts] == [["split0", "split1"], ["split2", "split3"],
                                                                  ["split4"]]
    # every value once, in order, beside its own row's labels
    assert [cell for p in parts for cell in p.blocks[0][1][1][2:]] == [f"{v}r1" for v in values]
    assert all(p.blocks[0][1][0][:2] == ["sasrec", "random"] for p in parts)
    tex = tabulars(grid, "page")
    assert len(_outer_tabulars(tex)) == 3 and tex.count("\\par\\medskip") == 2
    for spec, body in _outer_tabulars(tex):
        assert all(sum(_span(c) for c in row) == _columns(spec) for row in _rows(body))
    assert split_grid(grid, 23) == [grid] and len(_outer_tabulars(tabulars(grid, "column"))) == 5
