"""`bench view` without a browser: the site of a small store (the `collapse` suite's committed records and
tables) builds, every link and image in it resolves to a file and anchor of the site, text is escaped, two
builds are byte-identical, and bad input exits 2 with one line."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from bench.cli import main
from bench.view import build_site
from bench.view import site as site_module
from tests.test_frame import copy_store


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids, self.scripts = [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key) is not None:
                self.links.append(attrs[key])


def parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    copy_store(root, "collapse")
    return root


@pytest.fixture(scope="module")
def site(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    index = build_site(results, out, ["collapse"])
    assert index == out / "index.html"
    return out


def test_pages_and_links_resolve(site):
    """Every href / src is a local file of the site (no network), and every #fragment an id in its page."""
    pages = sorted(site.rglob("*.html"))
    names = {p.relative_to(site).as_posix() for p in pages}
    assert {"index.html", "claims.html", "suite-collapse.html"} <= names
    assert len([n for n in names if n.startswith("runs/")]) == 11
    assert (site / "figures" / "collapse.png").is_file()
    parsed = {page: parse(page) for page in pages}
    checked = 0
    for page, links in parsed.items():
        for link in links.links:
            if link.startswith("data:"):
                continue
            parts = urlsplit(link)
            assert not parts.scheme and not parts.netloc, f"{page.name}: {link} leaves the site"
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            assert target.is_file(), f"{page.relative_to(site)}: {link} does not exist"
            assert site.resolve() in target.parents or target.parent == site.resolve()
            if parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else parse(target).ids
                assert parts.fragment in ids, f"{page.relative_to(site)}: no #{parts.fragment} in {target.name}"
            checked += 1
    assert checked > 200


def test_results_table_cells_link_their_runs(site, results):
    """The results table has one row per cell with mean ± std over its seeds, each seed a link to its run
    page; the run page shows that run's id and its record's overall ndcg@10."""
    page = (site / "suite-collapse.html").read_text(encoding="utf-8")
    table = page[page.index('id="results-collapse"'):page.index("</table>", page.index('id="results-collapse"'))]
    assert table.count('<tr id="cell-') == 11  # the collapse grid: 11 cells of one seed each
    assert "lightgcn [embedding_size=32]" in table and "llminit-full (runs at d=384)" in table
    first = re.search(r'<a class="seed" href="runs/([0-9a-f]{16})\.html"', table).group(1)
    record = json.loads((results / "runs" / first / "record.json").read_text())
    assert f"{record['metrics']['overall']['ndcg@10']:.4f}" in table
    run_page = (site / "runs" / f"{first}.html").read_text(encoding="utf-8")
    assert f'<code id="run-id">{first}</code>' in run_page
    assert f"{record['metrics']['overall']['ndcg@10']:.6g}" in run_page
    embedded = re.search(r'<script type="application/json" id="record-json">(.*?)</script>', run_page, re.S)
    assert json.loads(embedded.group(1))["run_id"] == first
    assert "Gain % vs random [95% CI]" in page  # the significance table joined to the cells


def test_escaping(results, tmp_path, monkeypatch):
    """A label holding markup is shown as text, in HTML and in the embedded JSON."""
    real = site_module.suite_frame

    def hostile(name, profile, store):
        frame = real(name, profile, store)
        frame["method_label"] = frame["method_label"] + ' <script>alert("x")</script>'
        return frame

    monkeypatch.setattr(site_module, "suite_frame", hostile)
    out = build_site(results, tmp_path / "site", ["collapse"]).parent
    texts = {p: p.read_text(encoding="utf-8") for p in out.rglob("*.html")}
    for path, text in texts.items():
        assert '<script>alert("x")' not in text, path
    suite_page = texts[out / "suite-collapse.html"]
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in suite_page
    assert "\\u003cscript\\u003ealert" in suite_page  # inside the embedded frame JSON
    assert any("&lt;script&gt;" in t for p, t in texts.items() if p.parent.name == "runs")


def test_builds_are_identical(results, site, tmp_path):
    again = build_site(results, tmp_path / "again", ["collapse"]).parent
    files = sorted(p.relative_to(site) for p in site.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (site / rel).read_bytes() == (again / rel).read_bytes(), rel
    stale = again / "runs" / "0000000000000000.html"
    stale.write_text("old")
    build_site(results, again, ["collapse"])
    assert not stale.exists()  # a rebuild removes what it no longer writes


def test_cli(results, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["view", "--results", str(results), "--out", str(out), "--suite", "collapse"]) == 0
    assert capsys.readouterr().out.strip() == f"site written: {(out / 'index.html').resolve().as_uri()}"
    cases = [
        (["--results", str(results), "--out", str(tmp_path / "a"), "--suite", "collapse", "nope"], "suite 'nope'"),
        (["--results", str(tmp_path / "missing"), "--out", str(tmp_path / "b")], "no such folder"),
        (["--results", str(results), "--out", str(results / "collapse")], "not a site bench view wrote"),
    ]
    for args, words in cases:
        assert main(["view", *args]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("bench: error:") and words in err, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written on bad input
