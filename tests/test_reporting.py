"""Suite grids, run selection by spec fields, paired statistics, claims, `bench compare`, figures,
significance marks and the per-run lock, on synthetic run records (no training)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.records import ResultStore
from bench.report.claims import Claim, ClaimsFile, check_claims, claims_table, load_claims
from bench.report.compare import compare_report
from bench.report.stats import compare, correct
from bench.report.tables import collect, main_table, significance_table
from bench.selection import field_value, pair, parse_selector, stored_specs
from bench.spec import RunSpec, Suite, expand, load_suite
from methods.pte.report import offline_cost_table, profile_examples

N_USERS = 200


def spec(method="random", split="half_history", backbone="lightgcn", seed=0, size=128, dataset="ml-100k"):
    return RunSpec(dataset=dataset, split=split, split_settings={"seed": 0}, backbone=backbone,
                   backbone_settings={"embedding_size": size, "epochs": 3},
                   method=method, encoder="minilm" if method.startswith("llminit") else None, seed=seed)


def put(store: ResultStore, run: RunSpec, level: float, noise: float = 0.02) -> None:
    """A record whose per-user ndcg@10 is `level` + noise (users shared across runs)."""
    rng = np.random.default_rng(int(run.run_id[:8], 16))  # deterministic (str hash is salted per process)
    values = np.clip(level + rng.normal(0, noise, N_USERS), 0, 1)
    per_user = pd.DataFrame({"user": [str(u) for u in range(N_USERS)], "ndcg@10": values,
                             "recall@10": np.clip(values * 2, 0, 1)})
    overall = {"ndcg@10": float(values.mean()), "recall@10": float(per_user["recall@10"].mean()),
               "n_users": N_USERS}
    store.write(run.run_id, {"status": "complete", "run_id": run.run_id, "spec": run.model_dump(mode="json"),
                             "metrics": {"overall": overall}, "params": {"trainable": 10},
                             "latency": {"median_ms": 1.0}, "timings": {"train": 1.0},
                             "provenance": {"split_hash": "x"}}, per_user)


@pytest.fixture
def store(tmp_path) -> ResultStore:
    """LLMInit-var clearly above random on half_history (3 seeds), equal on temporal_loo; a size sweep
    where random peaks at 128."""
    store = ResultStore(tmp_path / "results")
    for seed in range(3):
        put(store, spec("random", seed=seed), 0.20)
        put(store, spec("llminit-var", seed=seed), 0.26)
        put(store, spec("llminit-rand", seed=seed), 0.14)
        put(store, spec("random", split="temporal_loo", seed=seed), 0.30)
        put(store, spec("llminit-var", split="temporal_loo", seed=seed), 0.305)
    for size, level in ((64, 0.27), (256, 0.25), (512, 0.22), (1024, 0.18)):
        put(store, spec("random", split="temporal_loo", size=size), level)
    return store


def test_grid_expands_with_method_restrictions_and_skips():
    specs = expand(load_suite("collapse"))
    sizes = {(s.method, s.backbone_settings["embedding_size"]) for s in specs}
    assert {size for m, size in sizes if m == "random"} == {32, 64, 128, 256, 512, 1024}
    assert {size for m, size in sizes if m == "llminit-var"} == {32, 64, 128, 256}  # MiniLM: 384 dims
    assert [m for m, _ in sizes].count("llminit-full") == 1  # not swept: its size is the encoder's
    assert len(specs) == 11 * len(load_suite("collapse").seeds)
    paper = expand(load_suite("collapse", "paper"))
    assert {s.backbone_settings["embedding_size"] for s in paper if s.method == "llminit-var"} == {
        32, 64, 128, 256, 512}
    assert {s.encoder for s in paper if s.encoder} == {"mpnet"}


def test_grid_keeps_run_ids_and_validates():
    base = load_suite("smoke")
    plain = [s.run_id for s in expand(base)]
    same = base.model_copy(update={"grid": {"backbone.embedding_size": [128]}})
    assert [s.run_id for s in expand(same)] == plain  # a grid point equal to the default: same runs
    assert "grid" not in RunSpec.model_fields  # a grid adds no field to RunSpec: old ids stay valid
    with pytest.raises(BenchError, match="LAYER.KEY"):
        expand(base.model_copy(update={"grid": {"embedding_size": [64]}}))
    with pytest.raises(BenchError, match="unknown setting 'embedding_sz'"):
        expand(base.model_copy(update={"grid": {"backbone.embedding_sz": [64]}}))
    bad = Suite.model_validate({**base.model_dump(), "grid": {"backbone.embedding_size": {
        "values": [64], "methods": ["nosuch"]}}})
    with pytest.raises(BenchError, match="does not run"):
        expand(bad)


def test_selection_by_spec_fields(store):
    specs = stored_specs(store)
    assert len(specs) == 19
    run = spec("random", size=256)
    assert field_value(run, "backbone.embedding_size") == 256 and field_value(run, "seed") == 0
    assert parse_selector("method=llminit-var,backbone.embedding_size=64") == {
        "method": "llminit-var", "backbone.embedding_size": 64}
    with pytest.raises(BenchError, match="LAYER.KEY"):
        parse_selector("nosuch.key=1")
    pairings = pair(specs, {}, {"method": "llminit-var"}, {"method": "random"})
    assert [p.spec.split for p in pairings] == ["half_history", "temporal_loo"]
    assert all(p.seeds == [0, 1, 2] for p in pairings)
    # a side naming a setting pairs across it (sizes differ, everything else shared)
    sweep = pair(specs, {"split": "temporal_loo"}, {"method": "random", "backbone.embedding_size": 128},
                 {"method": "random", "backbone.embedding_size": 1024})
    assert len(sweep) == 1 and sweep[0].seeds == [0]


def test_compare_effect_and_tests(store):
    a = [spec("llminit-var", seed=s) for s in range(3)]
    b = [spec("random", seed=s) for s in range(3)]
    result = compare(store, a, b, "ndcg@10")
    assert result["relative"] == pytest.approx(0.3, abs=0.02)
    assert result["unit"] == "users" and result["n_users"] == N_USERS and result["n_seeds"] == 3
    assert result["n_nonzero"] == N_USERS
    assert result["wilcoxon_p"] < 1e-10 and result["ttest_p"] < 0.01 and result["effect_dz"] > 1
    # no sign flip reaches the observed mean: the smallest two-sided p of 10000 resamples
    assert result["signflip_p"] == pytest.approx(2 / 10_001)
    assert result["ci_low"] < result["relative"] < result["ci_high"]
    # a metric with no per-user values falls back to seed-level means (t-test only)
    del_metric = compare(store, a, b, "n_users")
    assert del_metric["unit"] == "seeds" and del_metric["n_users"] == 0 and np.isnan(del_metric["wilcoxon_p"])


def test_correction_holm_and_bh():
    p = [0.01, 0.04, 0.03, 0.5]
    assert correct(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert correct(p, "bh") == pytest.approx([0.04, 0.0533333, 0.0533333, 0.5], rel=1e-5)
    assert correct([0.2, float("nan")], "none")[0] == 0.2
    with pytest.raises(BenchError, match="valid choices"):
        correct(p, "bonferoni")


def test_claims_hold_fail_and_not_run(store):
    claims = ClaimsFile(claims=[
        Claim(id="better", text="", kind="better", where={"split": "half_history"},
              a={"method": "llminit-var"}, b={"method": "random"}),
        Claim(id="reversed", text="", kind="better", where={"split": "half_history"},
              a={"method": "llminit-rand"}, b={"method": "random"}),
        Claim(id="chain", text="", kind="order", where={"split": "half_history"},
              chain=[{"method": "llminit-var"}, {"method": "random"}, {"method": "llminit-rand"}]),
        Claim(id="gain", text="", kind="larger_gain", a={"method": "llminit-var"}, b={"method": "random"},
              larger={"split": "half_history"}, smaller={"split": "temporal_loo"}),
        Claim(id="collapse", text="", kind="falls_after", where={"split": "temporal_loo"},
              select={"method": "random"}, axis="backbone.embedding_size", at=128),
        Claim(id="missing", text="", kind="better", metric="auc", a={"method": "collm-mf"},
              b={"method": "tallrec"}),
    ])
    results = check_claims(store, claims)
    status = {r.claim.id: r.status(0.05)[0] for r in results}
    assert status == {"better": "holds", "reversed": "reversed", "chain": "holds", "gain": "holds",
                      "collapse": "holds", "missing": "not run"}
    by_id = {r.claim.id: r for r in results}
    assert by_id["better"].comparisons[0].effect == pytest.approx(0.3, abs=0.02)
    assert len(by_id["collapse"].comparisons) == 3  # 256, 512, 1024 vs 128
    # one row per comparison: the chain's two links and the sweep's three values each show their own numbers
    table = claims_table(results, 0.05)
    assert list(table["Claim"]) == ["better", "reversed", "chain", "chain", "gain", "collapse", "collapse",
                                    "collapse", "missing"]
    assert list(table["Claim verdict"]) == [status[c] for c in table["Claim"]]
    chain = table[table["Claim"] == "chain"]
    assert list(chain["Part"]) == ["llminit-var > random", "random > llminit-rand"]
    assert chain["Effect (rel.) [95% CI]"].nunique() == 2
    for comparison in by_id["chain"].comparisons:  # the interval is the test's: it excludes 0 where p is small
        assert comparison.p_corr < 0.05 and 0 < comparison.ci[0] < comparison.effect < comparison.ci[1]


def test_builtin_claims_file_loads_and_never_fails_on_empty_store(tmp_path, capsys):
    claims = load_claims()
    assert {"llminit-cold-lightgcn", "collm-auc-order", "llm2rec-stages", "pte-profile",
            "lightgcn-collapse", "llminit-gain-larger-cold"} <= {c.id for c in claims.claims}
    assert main(["claims", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("not run") >= len(claims.claims)
    assert (tmp_path / "claims.md").exists()


def test_compare_command(store, capsys):
    report = compare_report(store, stored_specs(store), "llminit-var", "random", {"split": "half_history"})
    assert "ml-100k/half_history/lightgcn" in report and "seeds [0, 1, 2]" in report
    assert "0.26" in report
    # raw and corrected primary p, the corrected column and the note naming the family and its size
    head = report.splitlines()[2]
    assert "| p " in head and "| p (Holm, 2) " in head and "| A vs B " in head and "Wilcoxon p (users)" in head
    assert "Holm over the 2 comparisons of this compare call" in report
    assert main(["compare", "llminit-var", "random", "--split", "half_history", "--results", str(store.root),
                 "--correction", "bh", "--metric", "ndcg@10"]) == 0
    assert "Benjamini–Hochberg over the 1 comparison of this compare call" in capsys.readouterr().out
    root = str(store.root)
    assert main(["compare", "llminit-var", "random", "--split", "temporal_loo", "--results", root,
                 "--metric", "ndcg@10"]) == 0
    assert "temporal_loo" in capsys.readouterr().out
    run_a, run_b = spec("llminit-var").run_id, spec("random").run_id
    assert main(["compare", run_a[:8], run_b, "--results", root]) == 0
    assert f"A = {run_a}" in capsys.readouterr().out
    assert main(["compare", "llminit-full", "random", "--results", root]) == 2
    assert "no stored runs" in capsys.readouterr().err


def test_main_table_marks_significant_cells(store):
    from bench.report.tables import significance_marks, significance_results

    specs = [spec(m, seed=s) for m in ("random", "llminit-var", "llminit-rand") for s in range(3)]
    sig = significance_table(specs, store)
    # llminit-var above random, llminit-rand below it: the table says which way, the family names its size
    assert list(sig["Significant"]) == ["better", "worse"] and "p (Holm, 2)" in sig.columns
    marks = significance_marks(significance_results(specs, store))
    assert set(marks.values()) == {"better", "worse"}
    table = main_table(collect(specs, store), metrics=("ndcg@10",), significant=marks)
    cells = dict(zip(table["Method"], table["ml-100k/half_history ndcg@10"]))
    assert cells["llminit-var"].endswith("↑") and cells["llminit-rand"].endswith("↓")
    assert not cells["random"].endswith(("↑", "↓", "†"))
    # swept settings label the backbone, so sizes are never pooled into one row
    sweep = [spec("random", split="temporal_loo", size=s) for s in (64, 128, 1024)]
    assert set(collect(sweep, store)["backbone"]) == {
        "lightgcn [embedding_size=64]", "lightgcn [embedding_size=128]", "lightgcn [embedding_size=1024]"}


def test_a_run_at_another_width_than_its_setting_is_labelled_so(store):
    full = spec("llminit-full", split="temporal_loo")
    put(store, full, 0.31)
    record = store.load(full.run_id)
    record["method_info"] = {"effective_embedding_size": 384}
    store.write(full.run_id, record, store.per_user(full.run_id))
    same = spec("llminit-var", split="temporal_loo")
    specs = [full, same, spec("random", split="temporal_loo")]
    labels = set(collect(specs, store)["method"])
    assert labels == {"llminit-full (runs at d=384)", "llminit-var", "random"}
    assert "llminit-full (runs at d=384)" in set(significance_table(specs, store)["Method"])


def test_offline_cost_table_counts_shared_profiles_once(store):
    runs = [spec("pte", split="cold_users", backbone=b, seed=s) for b in ("lightgcn", "sasrec") for s in range(2)]
    for run in runs:
        put(store, run, 0.2)
        record = store.load(run.run_id)
        record["method_info"] = {"pte": {
            "n_users": 10, "n_items": 20, "rounds": 1, "converged": False,
            "distances": [{"round": 1, "user": 0.25}],
            "offline_cost": {"requested": 50, "first_tokens": 1600, "first_seconds": 40.0},
            "examples": {"1": "likes | noir", "10": "likes comedies"}}}
        store.write(run.run_id, record, store.per_user(run.run_id))
    table = offline_cost_table(runs + [spec("random", split="cold_users")], store)
    assert len(table) == 1  # one profile stage, whatever the seeds and backbones
    row = table.iloc[0]
    assert row["Tokens/s"] == 40.0 and row["Profiles used"] == 50 and row["Distance per round"] == "r1: user 0.250"
    assert row["Run"] == min((r for r in runs if r.seed == 0), key=runs.index).run_id
    examples = profile_examples(runs, store)
    assert examples["User"].tolist() == ["1", "10"] and examples["Profile"].tolist()[0] == "likes / noir"
    # the family hooks, looked up by family (methods/<family>/report.py): tables of every format, and example
    # rows written as Markdown only
    from bench.report.tables import family_tables

    specs = runs + [spec("random", split="cold_users")]
    assert list(family_tables(specs, store)) == ["offline_cost"]
    assert list(family_tables(specs, store, "examples")) == ["pte_examples"]
    assert family_tables([spec("random", split="cold_users")], store, "examples") == {}


def test_figures_written_as_png_and_pdf(store, tmp_path):
    """Each figure draws the runs it is given (`bench figures` gives it its suite's: tests/test_figures.py)."""
    from bench.report.figures import coldstart_gain_figure, collapse_figure

    for size, level in ((64, 0.31), (256, 0.3)):
        put(store, spec("llminit-var", split="temporal_loo", size=size), level)
    out = tmp_path / "figures"
    specs = stored_specs(store)
    paths = collapse_figure(store, [s for s in specs if s.split == "temporal_loo"], out)
    paths += coldstart_gain_figure(store, [s for s in specs if s.split == "half_history"], out)
    assert sorted(p.name for p in paths) == ["coldstart_gain.pdf", "coldstart_gain.png", "collapse.pdf",
                                             "collapse.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_second_writer_of_a_run_id_waits_then_skips(tmp_path):
    """A process holding a run's lock writes the record; `execute` waits for it and does no work."""
    from bench.runner import execute

    store = ResultStore(tmp_path / "results")
    run = spec("random", dataset="no-such-dataset")  # executing it for real would fail
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from bench.records import ResultStore
from test_reporting import put, spec
store = ResultStore({str(store.root)!r})
with store.lock({run.run_id!r}):
    print("locked", flush=True)
    time.sleep(1.5)
    put(store, spec("random", dataset="no-such-dataset"), 0.2)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    start = time.perf_counter()
    record = execute(run, store, tmp_path / "cache")
    assert time.perf_counter() - start > 0.5  # it waited for the holder
    assert record["run_id"] == run.run_id
    assert holder.wait(timeout=30) == 0


def test_tox_matrix_is_up_to_date_and_covers_every_family_and_suite():
    from bench.catalog import method_families
    from bench.spec import suite_names

    root = Path(__file__).resolve().parent.parent
    check = subprocess.run([sys.executable, str(root / "scripts" / "tox_matrix.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    tox = (root / "tox.ini").read_text()
    for family in method_families():
        assert f"[testenv:{family}]" in tox and f"--family {family}" in tox
    for suite in suite_names():
        assert f"[testenv:suite-{suite}]" in tox
    assert "deps = torch==2.13.0" in tox and "--no-deps --require-hashes" in tox


def test_method_override_goes_to_the_methods_that_have_it():
    specs = expand(load_suite("smoke"), {"method": {"user_init": "max"}})
    settings = {s.method: s.method_settings for s in specs}
    assert settings["llminit-var"]["user_init"] == "max" and settings["random"] == {}
    with pytest.raises(BenchError, match="unknown method setting"):
        expand(load_suite("smoke"), {"method": {"user_int": "max"}})


def test_family_filter_runs_only_that_family(tmp_path, capsys, monkeypatch):
    import bench.executors

    seen = []

    def fake_run_specs(specs, *args, **kwargs):
        seen.extend(s.method for s in specs)
        return {"total": len(specs), "skipped": 0, "done": len(specs), "failed": {}}

    monkeypatch.setattr(bench.executors, "run_specs", fake_run_specs)
    argv = ["run", "--suite", "smoke,warm", "--family", "llminit", "--no-table", "--results", str(tmp_path)]
    assert main(argv) == 0
    assert set(seen) == {"random", "llminit-var", "llminit-rand", "llminit-uni", "llminit-full", "llminit-pca"}
    assert main(["run", "--suite", "smoke", "--family", "pte", "--results", str(tmp_path)]) == 0
    assert "no runs of method family 'pte'" in capsys.readouterr().out
    assert main(["run", "--suite", "smoke", "--family", "nosuch", "--results", str(tmp_path)]) == 2


def test_table_note_names_the_sampled_protocol_when_runs_used_it():
    from bench.report.tables import ranking_protocol

    full = RunSpec(dataset="ml-100k", split="longtail", backbone="sasrec", method="random", seed=0)
    sampled = full.model_copy(update={"split_settings": {"eval_negatives": 100}})
    assert ranking_protocol([full]) == "full ranking, train+valid items masked"
    assert "100 sampled negatives" in ranking_protocol([sampled]) and "full" not in ranking_protocol([sampled])
    assert ranking_protocol([full, sampled]).startswith("full ranking") and "100 sampled" in ranking_protocol(
        [full, sampled])


def test_main_table_cells_without_runs_print_a_dash_and_costs_come_last(store):
    """A row with no run on one split (here llminit-rand, half_history only) prints — there, never nan,
    and the cost columns follow every split's columns."""
    specs = [spec(m, split=sp) for m in ("random", "llminit-rand") for sp in ("half_history", "temporal_loo")]
    table = main_table(collect(specs, store), metrics=("ndcg@10",))
    assert list(table.columns[-2:]) == ["Trainable params", "Latency ms (median)"]
    row = table.set_index("Method").loc["llminit-rand"]
    assert row["ml-100k/temporal_loo ndcg@10"] == "—" and row["ml-100k/temporal_loo seeds"] == "—"
    assert str(row["ml-100k/half_history seeds"]) == "1" and "nan" not in table.to_markdown()


def test_cap_stopped_runs_are_marked_and_counted(tmp_path):
    """A cell with a run that stopped at its epoch cap carries ‡ and the note counts runs and cells."""
    from bench.report.tables import cap_note

    store = ResultStore(tmp_path / "results")
    runs = [spec("random", seed=s) for s in range(2)] + [spec("llminit-var", seed=s) for s in range(2)]
    for run in runs:
        put(store, run, 0.2)
    capped = runs[3]  # llminit-var seed 1: at the cap; the rest stopped early
    for run in runs:
        record = store.load(run.run_id)
        record["fit"] = {"converged": run.run_id != capped.run_id, "curve": []}
        store.write(run.run_id, record, store.per_user(run.run_id))
    frame = collect(runs, store)
    table = main_table(frame, metrics=("ndcg@10",))
    cells = dict(zip(table["Method"], table["ml-100k/half_history ndcg@10"]))
    assert cells["llminit-var"].endswith("‡") and not cells["random"].endswith("‡")
    assert cap_note(frame).startswith("- ‡: 1 of 4 runs (1 cells) stopped at the epoch cap")


def test_significance_never_pools_runs_of_one_split_under_different_settings(tmp_path):
    """cold_items with all vs cold candidates: two comparisons, each over its own three seeds (pooling them
    would count six 'seeds' and mix two protocols)."""
    from bench.report.tables import significance_results

    store = ResultStore(tmp_path / "results")
    specs = []
    for candidates, gain in (("all", 0.0), ("cold", 0.08)):
        for seed in range(3):
            for method, level in (("random", 0.20), ("llminit-var", 0.20 + gain)):
                run = spec(method, split="cold_items", seed=seed).model_copy(
                    update={"split_settings": {"seed": 0, "candidates": candidates}})
                put(store, run, level)
                specs.append(run)
    results = significance_results(specs, store).set_index("Split")
    assert sorted(results.index) == ["cold_items [candidates=all]", "cold_items [candidates=cold]"]
    assert (results["n_seeds"] == 3).all()
    assert results.loc["cold_items [candidates=cold]", "relative"] > 0.3
    assert abs(results.loc["cold_items [candidates=all]", "relative"]) < 0.05


def test_per_seed_split_settings_pair_as_seeds_not_contexts():
    """ctr's few-shot sample follows the run seed (shots_seed = seed): runs of seeds 0 and 1 at one shot count
    are one context with two seeds, while different shot counts stay apart."""
    def ctr(method, seed, shots=16):
        return RunSpec(dataset="ml-100k", split="ctr_temporal", backbone="none", method=method, seed=seed,
                       split_settings={"shots": shots, "shots_seed": seed})

    specs = [ctr(m, s, shots) for m in ("tallrec", "mf-ctr") for s in (0, 1) for shots in (16, 64)]
    pairings = pair(specs, {}, {"method": "tallrec"}, {"method": "mf-ctr"})
    assert len(pairings) == 2 and all(p.seeds == [0, 1] for p in pairings)
    assert sorted(p.context for p in pairings) == ["ml-100k/ctr_temporal/none [split.shots=16]",
                                                   "ml-100k/ctr_temporal/none [split.shots=64]"]


def test_records_written_before_a_setting_existed_pair_with_newer_ones(tmp_path):
    """A record that predates a defaulted setting (its stored split settings lack `eval_negatives`) has the
    same run id as one written after it, and the two pair as one context: claims and `bench compare` saw two
    contexts and skipped the comparison (four PtE Table 5 claims read 'not run' with every run stored)."""
    from bench.data.splits import resolve_split_params

    store = ResultStore(tmp_path / "results")
    full = resolve_split_params("half_history", {"seed": 0})
    old = {k: v for k, v in full.items() if k != "eval_negatives"}
    assert "eval_negatives" in full
    for seed in range(2):
        put(store, spec("random", seed=seed).model_copy(update={"split_settings": old}), 0.20)
        put(store, spec("llminit-var", seed=seed).model_copy(update={"split_settings": full}), 0.26)
    old_spec = spec("random").model_copy(update={"split_settings": old})
    assert old_spec.run_id == old_spec.model_copy(update={"split_settings": full}).run_id  # the id rule
    specs = stored_specs(store)
    assert all(s.split_settings == full for s in specs)
    pairings = pair(specs, {}, {"method": "llminit-var"}, {"method": "random"})
    assert len(pairings) == 1 and len(pairings[0].runs_a) == len(pairings[0].runs_b) == 2


def test_backbone_labels_name_a_setting_only_where_a_cell_sweeps_it():
    """A grid sweeps a setting within one cell (its runs stay apart); a tuned profile gives each row its own
    settings (its rows are still one backbone, compared with each other)."""
    from bench.report.labels import backbone_labels

    swept = [spec("random", size=64), spec("random", size=128), spec("llminit-var", size=64)]
    labels = backbone_labels(swept)
    assert labels[swept[0].run_id] == "lightgcn [embedding_size=64]"
    assert labels[swept[1].run_id] == "lightgcn [embedding_size=128]"
    assert labels[swept[2].run_id] == "lightgcn [embedding_size=64]"
    tuned = [spec("random", size=64, seed=0), spec("random", size=64, seed=1), spec("llminit-var", size=128)]
    assert set(backbone_labels(tuned).values()) == {"lightgcn"}


def test_the_settings_note_shows_every_value_of_a_setting_that_differs_between_rows():
    from bench.report.tables import settings_note
    from bench.spec import load_suite

    suite = load_suite("smoke")
    runs = [spec("random", size=128), spec("llminit-var", size=64), spec("random", size=64, seed=1)]
    runs = [s.model_copy(update={"backbone_settings": {**s.backbone_settings, "stopping_step": 3,
                                                       "train_batch_size": 2048, "learning_rate": 1e-3}})
            for s in runs]
    note = settings_note(suite, runs)
    assert "lr 0.001, embedding by row 64 / 128" in note


def test_the_settings_note_names_what_every_seed_shares():
    """PtE's profiles and LLM2Rec's LLM stages are seeded by settings, not the run seed: the note says which rows
    share them (with those seeds), and says nothing for rows the run seed trains whole."""
    from bench.report.tables import seed_shared_lines

    specs = [s for s in expand(load_suite("pte")) if s.method in ("pte", "pte-grpo", "pte-noprofile", "random")]
    specs += [s for s in expand(load_suite("sequential")) if s.method == "llm2rec-csft"]
    pte = next(s for s in specs if s.method == "pte")
    specs.append(pte.model_copy(update={"method_settings": {**pte.method_settings, "profile_seed": 7}}))
    [line] = seed_shared_lines(specs)
    assert "pte: user profiles, item profiles (profile_seed 0)" in line
    assert "pte-grpo: user profiles, item profiles, GRPO adapter (profile_seed 0)" in line
    assert "llm2rec-csft: LLM stages CSFT (seed 0)" in line and "MNTP" not in line
    assert "pte: user profiles, item profiles (profile_seed 7)" in line
    assert "noprofile" not in line and "random" not in line
    assert seed_shared_lines([s for s in specs if s.method in ("random", "pte-noprofile")]) == []
