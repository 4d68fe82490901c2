"""`bench view`: the static results site, in the style of `inspect view bundle`: one HTML file per view,
data embedded as JSON, no server, no network (inline CSS and JS; figures copied next to the pages).

`index.html` (suites, the claims summary, figures), `claims.html` (`results/claims.md`), one
`suite-<name>.html` per suite (its results table from the results frame, one row per table cell with
mean ± std over seeds and each seed linking to its run; the significance join; every generated table of
`results/<suite>/` with its notes; its figures; its runs; the frame itself as JSON, downloadable as CSV)
and `runs/<run_id>.html` per run (`bench.view.runs`). The output is a function of the records and
generated tables alone (no timestamps, sorted keys): building twice gives identical files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from bench.errors import BenchError, UnknownChoiceError
from bench.records import ResultStore
from bench.report.frame import suite_frame
from bench.spec import expand, load_suite, suite_names
from bench.view.html import data_table, esc, fmt, json_script, linkify, markdown, page
from bench.view.runs import run_page

MARKER = ".bench-view"  # marks a folder as a generated site: only such a folder is pruned or rewritten
CELL = ["dataset", "split_label", "backbone_label", "method_label"]
HEADLINE = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "auc", "uauc")
TABLE_ORDER = ("main", "segments", "significance", "catalogue", "convergence", "offline_cost")
SUITE_FIGURES = {"collapse": ("collapse",), "coldstart": ("coldstart_gain",), "paradigms": ("tradeoff",)}
SCREENSHOT = "site.png"  # the README's screenshot of this site, not a results figure


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    return (rows[0], rows[1:]) if rows else ([], [])


def _flag(value) -> bool | None:
    """A nullable boolean of the frame as Python (None where the record does not say)."""
    return None if pd.isna(value) else bool(value)


def _suite_href(name: str) -> str:
    return f"suite-{name}.html"


def _mean_std(values: list[float]) -> tuple[float, str]:
    series = pd.Series(values, dtype="float64")
    if len(series) == 1:
        return float(series.iloc[0]), f"{series.iloc[0]:.4f}"
    return float(series.mean()), f"{series.mean():.4f} ± {series.std(ddof=1):.4f}"


def results_cells(frame: pd.DataFrame) -> list[dict]:
    """One entry per table cell (dataset, split, backbone, method labels) of the overall segment, in the
    suite's order: its runs (seed, run id) and, per headline metric, the seeds' values."""
    overall = frame[frame["segment"] == "overall"]
    cells = []
    for key, group in overall.groupby(CELL, sort=False):
        runs = group.drop_duplicates("run_id").sort_values(["seed", "run_id"])
        values = {m: group[group["metric"] == m].sort_values("seed")["value"].tolist() for m in HEADLINE}
        cells.append({"key": tuple(key), "runs": list(zip(runs["seed"], runs["run_id"])),
                      "protocol": runs["protocol"].iloc[0], "values": {m: v for m, v in values.items() if v},
                      "trainable": int(runs["trainable"].median()), "latency_ms": float(runs["latency_ms"].median()),
                      "capped": bool(runs["capped"].any()), "collapsed": bool(runs["collapsed"].any()),
                      "loaded": bool(runs["latency_loaded"].any())})
    return cells


def _significance(results_dir: Path, suite: str) -> tuple[list[str], dict[tuple, dict]]:
    path = results_dir / suite / "significance.csv"
    if not path.is_file():
        return [], {}
    header, rows = _read_csv(path)
    wanted = [h for h in header if h.startswith("Gain") or h.startswith("p (") or h == "Significant"]
    table = {}
    for row in rows:
        entry = dict(zip(header, row))
        table[(entry.get("Dataset"), entry.get("Split"), entry.get("Backbone"), entry.get("Method"))] = entry
    return wanted, table


def _results_table(name: str, cells: list[dict], significance: tuple[list[str], dict], baseline: str) -> str:
    metrics = [m for m in HEADLINE if any(m in c["values"] for c in cells)]
    sig_columns, sig_rows = significance
    header = ["Dataset", "Split", "Backbone", "Method", "Protocol", "Seeds", *metrics,
              *[c.replace("Gain %", f"Gain % vs {baseline}") for c in sig_columns], "Trainable", "Latency ms",
              "Flags"]
    # a column with one value in every row (one dataset, one protocol) is said once above the table instead
    constant = {h: str(v[0]) for h, v in (("Dataset", [c["key"][0] for c in cells]),
                                          ("Protocol", [c["protocol"] for c in cells])) if len(set(v)) == 1}
    keep = [i for i, h in enumerate(header) if h not in constant]
    rows, keys, ids = [], [], []
    for i, cell in enumerate(cells):
        seeds = " ".join(f'<a class="seed" href="runs/{esc(run_id)}.html" title="seed {seed}: run {esc(run_id)}">'
                         f"{seed}</a>" for seed, run_id in cell["runs"])
        row = [esc(v) for v in cell["key"]] + [esc(cell["protocol"]), str(len(cell["runs"]))]
        sort = [None] * len(row)
        for metric in metrics:
            values = cell["values"].get(metric)
            if not values:
                row.append("—")
                sort.append(None)
                continue
            mean, text = _mean_std(values)
            row.append(f'{esc(text)}<sup class="seeds">{seeds}</sup>')
            sort.append(mean)
        entry = sig_rows.get(cell["key"], {})
        row += [esc(entry.get(c, "—")) for c in sig_columns]
        sort += [None] * len(sig_columns)
        flags = ("‡ capped " if cell["capped"] else "") + ("◊ collapsed " if cell["collapsed"] else "") + \
                ("* latency loaded" if cell["loaded"] else "")
        row += [f"{cell['trainable']:,}", fmt(round(cell["latency_ms"], 3)), f'<span class="flag">{esc(flags)}</span>']
        sort += [cell["trainable"], cell["latency_ms"], None]
        rows.append([row[k] for k in keep])
        keys.append([sort[k] for k in keep])
        ids.append(f"cell-{i}")
    said = " · ".join(f"{h.lower()}: {esc(v)}" for h, v in constant.items())
    return (f'<p class="note">{said}</p>' if said else "") + data_table(
        f"results-{name}", [header[k] for k in keep], rows, raw=True, row_ids=ids, sort_keys=keys,
        css_class="data results")


def _generated_tables(results_dir: Path, name: str, run_links: dict[str, str], cell_ids: dict[tuple, str]) -> str:
    folder = results_dir / name
    if not folder.is_dir():
        return (f'<p class="note">No generated tables under results/{esc(name)}/ (python -m bench table --suite '
                f"{esc(name)}).</p>")
    stems = sorted({p.stem for p in folder.iterdir() if p.suffix in (".csv", ".md")},
                   key=lambda s: (TABLE_ORDER.index(s) if s in TABLE_ORDER else len(TABLE_ORDER), s))
    out = []
    for stem in stems:
        csv_path, md_path = folder / f"{stem}.csv", folder / f"{stem}.md"
        md_text = md_path.read_text(encoding="utf-8") if md_path.is_file() else ""
        out.append(f'<h3 id="table-{esc(stem)}">{esc(stem)}</h3>')
        if csv_path.is_file():
            header, rows = _read_csv(csv_path)
            position = {h: i for i, h in enumerate(header)}
            linked = []
            for row in rows:
                cells = [linkify(c, run_links) for c in row]
                if all(k in position for k in ("Dataset", "Split", "Backbone", "Method")):
                    key = tuple(row[position[k]] for k in ("Dataset", "Split", "Backbone", "Method"))
                    if key in cell_ids:
                        m = position["Method"]
                        cells[m] = f'<a href="#{cell_ids[key]}">{cells[m]}</a>'
                linked.append(cells)
            out.append(data_table(f"{name}-{stem}", header, linked, raw=True))
            out.append(markdown(md_text, f"{name}-{stem}", run_links, tables=False))
        else:
            out.append(markdown(md_text, f"{name}-{stem}", run_links))
    return "\n".join(out)


def _figures(names: list[str]) -> str:
    return "".join(f'<div class="fig"><a href="figures/{esc(n)}"><img src="figures/{esc(n)}" alt="{esc(n)}"></a>'
                   f"<div>{esc(n)}</div></div>" for n in names)


def _suite_page(name: str, frame: pd.DataFrame, results_dir: Path, run_links: dict[str, str],
                expected: int, figures: list[str]) -> str:
    suite = load_suite(name)
    cells = results_cells(frame)
    cell_ids = {c["key"]: f"cell-{i}" for i, c in enumerate(cells)}
    runs = frame.drop_duplicates("run_id")
    profiles = ", ".join(f"{p} (tables under results/{name}-{p})" if (results_dir / f"{name}-{p}").is_dir()
                         else f"{p} (not run)" for p in suite.profiles)
    primary = "ndcg@10" if (frame["metric"] == "ndcg@10").any() else "auc"
    primary_values = frame[(frame["segment"] == "overall") & (frame["metric"] == primary)].set_index("run_id")["value"]
    run_rows = [[f'<a href="runs/{esc(r.run_id)}.html">{esc(r.run_id)}</a>', esc(r.dataset), esc(r.split_label),
                 esc(r.backbone_label), esc(r.method_label), str(r.seed), fmt(primary_values.get(r.run_id)),
                 fmt(_flag(r.converged)), fmt(bool(r.capped)), fmt(bool(r.collapsed))] for r in runs.itertuples()]
    columns = list(frame.columns)
    data = [[None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in row]
            for row in frame.itertuples(index=False)]
    suite_figures = [f for f in figures if Path(f).stem in SUITE_FIGURES.get(name, ())]
    body = [
        f"<h1>Suite <code>{esc(name)}</code></h1>",
        f'<p>{esc(suite.description)}</p>',
        f"<p>{len(runs)} of {expected} runs stored (default profile) · {len(cells)} table cells · baseline "
        f"<code>{esc(suite.baseline)}</code> · other profiles: {esc(profiles) or '—'}</p>",
        '<p><a href="#results">Results</a> · <a href="#tables">Generated tables</a> · <a href="#suite-figures">'
        'Figures</a> · <a href="#runs">Runs</a></p>',
        '<h2 id="results">Results (overall segment; mean ± std over seeds, each seed a link to its run)</h2>',
        _results_table(name, cells, _significance(results_dir, name), suite.baseline) if cells
        else '<p class="note">No run of this suite is stored: not run.</p>',
        '<h2 id="tables">Generated tables</h2>', _generated_tables(results_dir, name, run_links, cell_ids),
        '<h2 id="suite-figures">Figures</h2>',
        _figures(suite_figures) or '<p class="note">No figure of this suite.</p>',
        f'<h2 id="runs">Runs ({len(runs)})</h2>',
        data_table(f"runs-{name}", ["Run", "Dataset", "Split", "Backbone", "Method", "Seed", f"{primary} (overall)",
                                    "Converged", "Capped", "Collapsed"], run_rows, raw=True),
        '<h2 id="frame">Results frame</h2>',
        f'<p class="note">The suite\'s tidy results frame (bench.report.frame: one row per run, segment and metric; '
        f'{len(frame)} rows) is embedded in this page as JSON. <button type="button" '
        f"onclick=\"downloadFrame('frame-{esc(name)}','{esc(name)}-frame.csv')\">Download as CSV</button></p>",
        json_script(f"frame-{name}", {"columns": columns, "data": data}),
    ]
    return page(f"Suite {name}", "\n".join(body))


def _claims_summary(results_dir: Path, run_links: dict[str, str]) -> str:
    path = results_dir / "claims.md"
    if not path.is_file():
        return '<p class="note">No claims report: python -m bench claims.</p>'
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return '<p class="note">The claims report holds no table.</p>'
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return markdown("\n".join(lines[start:end]), "claims-summary", run_links) + \
        '<p><a href="claims.html">Every comparison, its test and its runs</a></p>'


def _index(names: list[str], summaries: dict[str, tuple[int, int, int]], results_dir: Path,
           run_links: dict[str, str], figures: list[str]) -> str:
    rows = []
    for name in names:
        stored, expected, n_cells = summaries[name]
        suite = load_suite(name)
        rows.append([f'<a href="{_suite_href(name)}">{esc(name)}</a>', esc(suite.description),
                     f"{stored} / {expected}", str(n_cells), esc(", ".join(suite.profiles) or "—")])
    body = [
        "<h1>Results</h1>",
        '<p class="note">Generated by <code>python -m bench view</code> from the verified run records and the tables '
        "<code>bench table</code>, <code>bench claims</code> and <code>bench figures</code> wrote; nothing here is "
        "hand-edited. Tables sort by clicking a header and filter with the box above them.</p>",
        '<h2 id="suites">Suites</h2>',
        data_table("suite-list", ["Suite", "Description", "Runs stored / in suite", "Cells",
                                  "Other profiles (not run here)"], rows, raw=True),
        '<h2 id="claims">Claims</h2>', _claims_summary(results_dir, run_links),
        '<h2 id="figures">Figures</h2>',
        _figures(figures) or '<p class="note">No figures: python -m bench figures.</p>',
    ]
    return page("llmrec-bench results", "\n".join(body))


def _claims_page(results_dir: Path, run_links: dict[str, str]) -> str:
    path = results_dir / "claims.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else "No claims report: `python -m bench claims`."
    return page("Claims", '<h1>Claims</h1>\n<p class="note">results/claims.md, written by <code>python -m bench '
                "claims</code>: the papers' findings checked against the stored runs.</p>\n"
                + markdown(text, "claims", run_links))


def check_inputs(results_dir: Path, out_dir: Path, suites: list[str] | None = None) -> list[str]:
    """The suites to build (default every builtin suite), after checking, before anything is written, that
    each is a builtin suite, that `results_dir` holds run records and that `out_dir` may take the site.
    BenchError (one line) otherwise."""
    results_dir, out = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise BenchError(f"--results {results_dir}: no such folder")
    if not (results_dir / "runs").is_dir():
        raise BenchError(f"--results {results_dir}: no run records there (no runs/ folder); run a suite first, or "
                         "point --results at a results folder")
    known = suite_names()
    names = list(dict.fromkeys(suites or known))
    for name in names:
        if name not in known:
            raise UnknownChoiceError("suite", name, known)
    if out.resolve() == results_dir.resolve():
        raise BenchError(f"--out {out}: the site cannot go into the results folder itself; use e.g. {out / 'site'}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise BenchError(f"--out {out}: exists and is not a site bench view wrote (no {MARKER} file); give a new or "
                         "empty folder")
    return names


def build_site(results_dir: Path, out_dir: Path, suites: list[str] | None = None) -> Path:
    """Write the static site of `suites` (default: every builtin suite, default profile) from the records and
    generated tables under `results_dir` into `out_dir`; returns the index page. Files of an earlier build
    that this one did not write are removed. BenchError (one line) on a bad suite name or results folder."""
    names = check_inputs(results_dir, out_dir, suites)
    results_dir, out = Path(results_dir), Path(out_dir)
    store = ResultStore(results_dir)
    frames, expected = {}, {}
    for name in names:
        frames[name] = suite_frame(name, None, store)
        expected[name] = len(expand(load_suite(name)))
    run_ids = sorted({r for f in frames.values() for r in f["run_id"]})
    run_links = {r: f"runs/{r}.html" for r in run_ids}
    figure_dir = results_dir / "figures"
    figures = sorted(p.name for p in figure_dir.glob("*.png") if p.name != SCREENSHOT) if figure_dir.is_dir() else []
    files: dict[str, bytes] = {f"figures/{n}": (figure_dir / n).read_bytes() for n in figures}
    summaries = {}
    for name in names:
        frame = frames[name]
        files[_suite_href(name)] = _suite_page(name, frame, results_dir, run_links, expected[name], figures).encode()
        summaries[name] = (frame["run_id"].nunique(), expected[name], len(results_cells(frame)))
    files["index.html"] = _index(names, summaries, results_dir, run_links, figures).encode()
    files["claims.html"] = _claims_page(results_dir, run_links).encode()
    files.update(_run_pages(frames, store))
    _write(out, files)
    return out / "index.html"


def _run_pages(frames: dict[str, pd.DataFrame], store: ResultStore) -> dict[str, bytes]:
    """runs/<id>.html for every run of the frames; one page per run however many suites hold it."""
    suites_of: dict[str, list[str]] = {}
    first: dict[str, tuple[pd.Series, list]] = {}
    for name, frame in frames.items():
        runs = frame.drop_duplicates("run_id")
        for _, group in runs.groupby(CELL, sort=False):
            siblings = [(f"seed {s}", f"{r}.html") for s, r in sorted(zip(group["seed"], group["run_id"]))]
            for row in group.itertuples(index=False):
                suites_of.setdefault(row.run_id, []).append(name)
                first.setdefault(row.run_id, (row, siblings))
    pages = {}
    for run_id in sorted(first):
        row, siblings = first[run_id]
        flags = {"cell": " / ".join(str(getattr(row, c)) for c in CELL), "seed": int(row.seed), "protocol": row.protocol,
                 "encoder": row.encoder if isinstance(row.encoder, str) else None, "converged": _flag(row.converged),
                 "capped (‡)": bool(row.capped), "collapsed (◊)": bool(row.collapsed), "trainable": int(row.trainable),
                 "latency_ms": row.latency_ms, "latency on a loaded machine (*)": bool(row.latency_loaded)}
        suites = [(n, f"../{_suite_href(n)}") for n in suites_of[run_id]]
        pages[f"runs/{run_id}.html"] = run_page(store.load(run_id), flags, siblings, suites).encode()
    return pages


def _write(out: Path, files: dict[str, bytes]) -> None:
    """Write `files` under `out` (unchanged files are left alone) and remove the files of an earlier build
    that are not among them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `python -m bench view`; rebuilt and pruned by it\n")
    for rel, data in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name != MARKER and path.relative_to(out).as_posix() not in files:
            path.unlink()
