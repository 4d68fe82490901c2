"""`bench figures` draws what the tables print: the same rows, the same values and marks (cold-start gains, the
collapse sweep, the quality / latency trade-off), labels that never overlap, every seed on an axis from 0,
and byte-identical files when regenerated. Synthetic records, plus the committed ones where they are stored."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.records import ResultStore
from bench.report.figure_labels import LABEL_GID, label_boxes, place_labels
from bench.report.figures import (
    collapse_data,
    collapse_plot,
    gain_data,
    gain_plot,
    style,
    suite_specs,
    tradeoff_figure,
    tradeoff_plot,
    tradeoff_points,
)
from bench.report.labels import LOAD_MARK
from bench.report.paradigms import paradigms_frame, paradigms_table
from bench.report.stats import BETTER_MARK, WORSE_MARK
from bench.report.tables import collect, main_table, significance_marks, significance_results
from bench.spec import RunSpec

RESULTS = Path(__file__).resolve().parents[1] / "results"
N_USERS = 60
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def spec(method, split="half_history", backbone="lightgcn", seed=0, size=128):
    return RunSpec(dataset="ml-100k", split=split, split_settings={"seed": 0}, backbone=backbone,
                   backbone_settings={"embedding_size": size, "epochs": 3}, method=method,
                   encoder="minilm" if method.startswith(("llminit", "pte")) else None, seed=seed)


def put(store: ResultStore, run: RunSpec, level: float, noise: float = 0.01, latency: float = 1.0,
        loaded: bool = False, info: dict | None = None) -> None:
    """A record whose per-user ndcg@10 is `level` + noise (users shared across runs); its latency probe ran on a
    loaded machine (load average over its cores) when `loaded`."""
    rng = np.random.default_rng(int(run.run_id[:8], 16))
    values = np.clip(level + rng.normal(0, noise, N_USERS), 0, 1)
    per_user = pd.DataFrame({"user": [str(u) for u in range(N_USERS)], "ndcg@10": values})
    mean = float(values.mean())
    overall = {"recall@10": 2 * mean, "recall@20": 3 * mean, "ndcg@10": mean, "ndcg@20": 1.5 * mean,
               "n_users": N_USERS}
    store.write(run.run_id, {"status": "complete", "run_id": run.run_id, "spec": run.model_dump(mode="json"),
                             "metrics": {"overall": overall}, "params": {"trainable": 10},
                             "latency": {"median_ms": latency, "load_1min": 5.0 if loaded else 0.5,
                                         "cpu_count": 2},
                             "timings": {"train": 1.0}, "method_info": info or {},
                             "fit": {"converged": True, "curve": []}, "provenance": {"split_hash": "x"}}, per_user)


def _gids(fig, prefix: str) -> list[tuple[str, ...]]:
    """The `|`-separated gid fields of the figure's artists whose gid starts with `prefix|`."""
    out = []
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.patches]:
            gid = artist.get_gid()
            if gid and gid.startswith(prefix + "|"):
                out.append(tuple(gid.split("|")[1:]))
    return out


def _number(cell: str) -> float:
    return float(str(cell).split()[0].rstrip("%"))


# --- cold-start gains: the table's rows and values --------------------------------------------------------

@pytest.fixture
def coldstart(tmp_path):
    """Two splits x two backbones x random / llminit-var / llminit-rand, 3 seeds; plus a method stored on the
    same split and backbone that the suite (its specs) does not hold: the figure must not draw it."""
    store = ResultStore(tmp_path / "results")
    specs = []
    levels = {"random": 0.20, "llminit-var": 0.26, "llminit-rand": 0.19}
    for split, backbone, method, seed in itertools.product(("half_history", "new_users_fewshot"),
                                                           ("lightgcn", "sgl"), levels, range(3)):
        run = spec(method, split, backbone, seed)
        put(store, run, levels[method] * (1.5 if split == "new_users_fewshot" else 1.0))
        specs.append(run)
    put(store, spec("llminit-pca", "new_users_fewshot", "lightgcn"), 0.25)  # another suite's run
    return store, specs


def _drawn_gains(fig):
    """(panel, backbone, method) -> bar height (%) and the tick texts per panel."""
    heights = {}
    for ax in fig.axes:
        for patch in ax.patches:
            gid = patch.get_gid() or ""
            if gid.startswith("bar|"):
                _, panel, backbone, method = gid.split("|")
                heights[(panel, backbone, method)] = patch.get_height()
    return heights


def test_coldstart_gain_draws_exactly_the_table_rows_and_its_values(coldstart):
    store, specs = coldstart
    data = gain_data(store, specs)
    with style():
        fig = gain_plot(data)
    heights = _drawn_gains(fig)
    frame = collect(specs, store)
    results = significance_results(specs, store)
    table = main_table(frame, significant=significance_marks(results))
    rows = set(zip(table["Backbone"], table["Method"]))
    assert ("lightgcn", "llminit-pca") not in rows
    for ax, panel in zip(fig.axes, ("half_history", "new_users_fewshot")):
        prefix = f"ml-100k/{panel}"
        # drawn: a bar per method row, the baseline's mean beneath each backbone; together the table's rows
        bars = {(b, m) for p, b, m in heights if p == panel}
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        bases = {(t.split("\n")[0], "random") for t in ticks if "\nrandom " in t}
        assert bars | bases == rows and not bars & bases
        for _, row in table.iterrows():
            key = (panel, row["Backbone"], row["Method"])
            if row["Method"] == "random":  # its mean, as the table prints it, under its backbone's tick
                tick = next(t for t in ticks if t.startswith(row["Backbone"] + "\n"))
                assert tick.split("\n")[1].split()[1] == f"{_number(row[f'{prefix} ndcg@10']):.4f}"
                continue
            # the bar is the table's gain cell: the mean over seeds / the baseline's mean − 1
            assert heights[key] == pytest.approx(_number(row[f"{prefix} gain ndcg@10"]), abs=0.05)
            cell = frame[(frame["split"] == panel) & (frame["backbone"] == row["Backbone"])
                         & (frame["segment"] == "overall")]
            means = cell.groupby("method")["ndcg@10"].mean()
            assert heights[key] == pytest.approx(100 * (means[row["Method"]] / means["random"] - 1), abs=1e-9)
    # ↑ / ↓ where the table marks them, from the same significance family
    marks = {(d, s, b, m): v for (d, s, b, m), v in significance_marks(results).items()}
    drawn = data[data["direction"] != ""]
    assert {("ml-100k", r.split, r.backbone, r.method) for r in drawn.itertuples()} == set(marks)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count(BETTER_MARK) + texts.count(WORSE_MARK) == len(marks) > 0
    assert set(data["family"]) == {len(results)}
    fig.clf()


@pytest.mark.skipif(not (RESULTS / "coldstart" / "main.csv").is_file(), reason="no committed coldstart table")
def test_coldstart_gain_of_the_committed_records_matches_main_csv():
    """The committed records: the figure's (backbone, method) rows are those of results/coldstart/main.csv, each
    bar its gain cell (issue 26: the figure drew an llminit-pca bar of another suite's run)."""
    store = ResultStore(RESULTS)
    specs = suite_specs("coldstart", store)
    if not all(store.has(s.run_id) for s in specs):
        pytest.skip("coldstart records not all stored")
    data = gain_data(store, specs)
    table = pd.read_csv(RESULTS / "coldstart" / "main.csv")
    assert set(zip(data["backbone"], data["method"])) == set(zip(table["Backbone"], table["Method"]))
    for row in data[data["role"] == "method"].itertuples():
        cell = table[(table["Backbone"] == row.backbone) & (table["Method"] == row.method)].iloc[0]
        assert 100 * row.gain == pytest.approx(_number(cell[f"{row.dataset}/{row.split} gain ndcg@10"]), abs=0.051)


# --- collapse: every seed, an axis from 0 -------------------------------------------------------------------

def test_collapse_shows_every_seed_and_the_mean_from_zero(tmp_path):
    store = ResultStore(tmp_path / "results")
    specs = []
    for method, size, seed in itertools.product(("random", "llminit-var"), (32, 64, 128), range(3)):
        run = spec(method, "temporal_loo", size=size, seed=seed)
        put(store, run, 0.04 + 0.002 * seed + (0.003 if method == "llminit-var" else 0.0))
        specs.append(run)
    data = collapse_data(store, specs)
    with style():
        fig = collapse_plot(data)
    ax = fig.axes[0]
    seeds = {(m, int(size), int(seed)) for m, size, seed in _gids(fig, "seed")}
    assert seeds == {(s.method, s.backbone_settings["embedding_size"], s.seed) for s in specs}
    for line in ax.lines:  # each seed's marker at its record's value; the mean line at the mean of its seeds
        gid = line.get_gid() or ""
        if gid.startswith("seed|"):
            _, method, size, seed = gid.split("|")
            run = next(s for s in specs if (s.method, str(s.backbone_settings["embedding_size"]), str(s.seed))
                       == (method, size, seed))
            assert line.get_ydata()[0] == store.load(run.run_id)["metrics"]["overall"]["ndcg@10"]
        elif gid.startswith("mean|"):
            means = data[data["method"] == gid.split("|")[1]].groupby("size")["value"].mean()
            assert list(line.get_ydata()) == pytest.approx(list(means))
    assert ax.get_ylim()[0] == 0 and "from 0" in ax.get_title()
    assert ax.collections  # the ±1 std bands: 3 seeds a size
    fig.clf()


@pytest.mark.skipif(not (RESULTS / "collapse" / "main.csv").is_file(), reason="no committed collapse table")
def test_collapse_of_the_committed_records_draws_each_table_cell():
    store = ResultStore(RESULTS)
    specs = [s for s in suite_specs("collapse", store) if store.has(s.run_id)]
    if not specs:
        pytest.skip("no collapse records stored")
    data = collapse_data(store, specs)
    table = pd.read_csv(RESULTS / "collapse" / "main.csv")
    column = next(c for c in table.columns if c.endswith(" ndcg@10") and "gain" not in c)
    assert len(data) == len(specs)
    printed = sorted(_number(v) for v in table[column])
    assert sorted(float(f"{v:.4f}") for v in data.groupby(["method", "size"])["value"].mean()) == printed


# --- trade-off: the table's latency and load mark, labels without collisions ----------------------------------

PARADIGM_ROWS = (  # method, backbone, level, latency
    ("random", "lightgcn", 0.042, 1.04), ("llminit-var", "lightgcn", 0.044, 1.02), ("random", "sasrec", 0.065, 8.2),
    ("llminit-pca-seq", "sasrec", 0.086, 4.0), ("llm2rec", "sasrec", 0.028, 7.0), ("pte", "sasrec", 0.034, 4.3))


@pytest.fixture
def paradigms(tmp_path):
    """The paradigms rows on three splits, 3 seeds; latencies differ by split (the table prints the row's
    median over all of them) and one llm2rec run was timed on a loaded machine."""
    store = ResultStore(tmp_path / "results")
    specs = []
    for (method, backbone, level, latency), split, seed in itertools.product(
            PARADIGM_ROWS, ("temporal_loo", "cold_items", "longtail"), range(3)):
        run = spec(method, split, backbone, seed)
        factor = {"temporal_loo": 1.0, "cold_items": 3.0, "longtail": 0.5}[split]
        put(store, run, level * (0.9 if split == "cold_items" else 1.0), noise=0.002, latency=latency * factor,
            loaded=method == "llm2rec" and split == "longtail" and seed == 1)
        specs.append(run)
    return store, specs


def _points(fig):
    """(split, paradigm, backbone, method) -> (x, y, hollow) of each drawn point."""
    out = {}
    for line in fig.axes[0].lines:
        gid = line.get_gid() or ""
        if gid.startswith("point|"):
            out[tuple(gid.split("|")[1:])] = (line.get_xdata()[0], line.get_ydata()[0],
                                              line.get_markerfacecolor() == "none")
    return out


def test_tradeoff_latency_and_load_mark_are_the_table_cells(paradigms):
    store, specs = paradigms
    frame = paradigms_frame(specs, store)
    table = paradigms_table(frame).set_index(["Paradigm", "Backbone", "Method"])
    data = tradeoff_points(frame)
    with style():
        fig = tradeoff_plot(data)
    points = _points(fig)
    assert {k[1:] for k in points} == set(table.index)  # every row of the table, no other
    for (split, paradigm, backbone, method), (x, y, hollow) in points.items():
        row = table.loc[(paradigm, backbone, method)]
        cell = row["Latency ms/user"]
        assert x == float(cell.split()[0])  # the row's printed latency, the same at every split
        assert hollow == cell.endswith(LOAD_MARK)
        assert f"{y:.4f}" == row[f"{split} N@10"].split()[0]  # the cell's mean over seeds
    assert table.loc[("LLM2Rec", "sasrec", "llm2rec"), "Latency ms/user"].endswith(LOAD_MARK)
    labels = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == LABEL_GID]
    assert f"llm2rec {LOAD_MARK}" in labels and "pte" in labels and len(labels) == len(table)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(LOAD_MARK in text and "loaded machine" in text for text in legend)
    fig.clf()


def _assert_no_collisions(fig):
    boxes = label_boxes(fig)
    assert boxes
    frame = fig.axes[0].get_window_extent()
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"labels {a!r} and {b!r} overlap"
    for text, box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, text


def test_tradeoff_labels_never_overlap(paradigms):
    store, specs = paradigms
    with style():
        fig = tradeoff_plot(tradeoff_points(paradigms_frame(specs, store)))
    _assert_no_collisions(fig)
    fig.clf()


def test_crowded_labels_take_free_slots_with_leader_lines():
    """Twelve labels on points a few pixels apart: none overlaps another, all inside the axes; those pushed
    away from their point are joined to it by a leader line."""
    with style() as plt:
        fig, ax = plt.subplots(figsize=(4, 3))
        xs = 1 + 0.01 * np.arange(12)
        ys = 0.05 + 0.0002 * np.arange(12)
        ax.plot(xs, ys, "o")
        ax.set_xlim(0.5, 2)
        ax.set_ylim(0, 0.1)
        labels = place_labels(ax, [(f"method-{i} *", (x, y)) for i, (x, y) in enumerate(zip(xs, ys))])
        _assert_no_collisions(fig)
        assert any(label.arrow_patch is not None for label in labels)
        plt.close(fig)


@pytest.mark.skipif(not (RESULTS / "runs").is_dir(), reason="no committed records")
def test_tradeoff_of_the_committed_records():
    """The paradigms suite's stored records: labels never overlap, each point at its row's latency cell."""
    store = ResultStore(RESULTS)
    specs = suite_specs("paradigms", store)
    frame = paradigms_frame(specs, store)
    if frame.empty:
        pytest.skip("no paradigms records stored")
    table = paradigms_table(frame).set_index(["Paradigm", "Backbone", "Method"])
    with style():
        fig = tradeoff_plot(tradeoff_points(frame))
    for (_, paradigm, backbone, method), (x, _, hollow) in _points(fig).items():
        cell = table.loc[(paradigm, backbone, method), "Latency ms/user"]
        assert x == float(cell.split()[0]) and hollow == cell.endswith(LOAD_MARK)
    _assert_no_collisions(fig)
    fig.clf()


# --- deterministic files -------------------------------------------------------------------------------------

def test_figures_are_byte_identical_when_regenerated(paradigms, tmp_path):
    """Twice, the second time under other rcParams (a user's matplotlibrc): the same bytes; no date in either
    file (PNG without its Software chunk, PDF without CreationDate)."""
    import matplotlib

    store, specs = paradigms
    first = tradeoff_figure(store, specs, tmp_path / "a")
    with matplotlib.rc_context({"font.size": 17, "lines.linewidth": 4, "figure.dpi": 72}):
        second = tradeoff_figure(store, specs, tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in second] == ["tradeoff.png", "tradeoff.pdf"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    png, pdf = (p.read_bytes() for p in first)
    assert b"Software" not in png and b"CreationDate" not in pdf
