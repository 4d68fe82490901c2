"""The ctr table's evidence: AUC with a 95% bootstrap interval over test users (a user's pairs resampled
together), checked against an independent cluster bootstrap, and the table that prints it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.eval.pointwise import auc, auc_interval, evaluate_pairs


def synthetic_pairs(n_users: int, per_user: int = 8, signal: float = 0.8, seed: int = 0):
    """Users whose scores follow their labels more or less closely (a per-user signal: a user's pairs are
    correlated), with a per-user offset, rounded so that some scores tie."""
    rng = np.random.default_rng(seed)
    users = np.repeat([f"u{k}" for k in range(n_users)], per_user)
    labels = rng.random(len(users)) < 0.55
    strength = np.repeat(rng.normal(signal, 1.5, n_users), per_user)
    offset = np.repeat(rng.normal(0, 0.5, n_users), per_user)
    scores = np.round(strength * labels + offset + rng.normal(0, 1, len(users)), 1)
    return users, labels.astype(int), scores


def manual_cluster_bootstrap(users, labels, scores, n: int, seed: int) -> tuple[float, float]:
    """Independent of scipy: resample users with replacement, concatenate their pairs, AUC by sklearn."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    codes = np.unique(users)
    rows = {u: np.flatnonzero(users == u) for u in codes}
    values = []
    for _ in range(n):
        chosen = np.concatenate([rows[u] for u in rng.choice(codes, len(codes), replace=True)])
        values.append(roc_auc_score(labels[chosen], scores[chosen]))
    return tuple(np.percentile(values, [2.5, 97.5]))


def test_auc_interval_matches_an_independent_cluster_bootstrap(monkeypatch):
    users, labels, scores = synthetic_pairs(120)
    low, high = auc_interval(users, labels, scores)
    ref_low, ref_high = manual_cluster_bootstrap(users, labels, scores, 2000, seed=7)
    assert low < auc(labels, scores) < high
    assert low == pytest.approx(ref_low, abs=0.01) and high == pytest.approx(ref_high, abs=0.01)
    # resampling pairs as if independent would be narrower: users are the unit
    pair_users = np.arange(len(users)).astype(str)
    p_low, p_high = auc_interval(pair_users, labels, scores)
    assert p_high - p_low < high - low
    # four times the users: about half the width
    users4, labels4, scores4 = synthetic_pairs(480, seed=1)
    low4, high4 = auc_interval(users4, labels4, scores4)
    assert 0.35 < (high4 - low4) / (high - low) < 0.65
    # the large-data path (each resample's AUC recomputed from its pairs) gives the same interval
    import bench.eval.pointwise as pointwise

    fast = auc_interval(users, labels, scores, n_resamples=300)
    monkeypatch.setattr(pointwise, "WINS_LIMIT", 0)
    assert auc_interval(users, labels, scores, n_resamples=300) == pytest.approx(fast, abs=1e-12)
    monkeypatch.undo()
    # several runs on the same pairs: the interval of their mean AUC; identical runs give the run's interval
    assert auc_interval(users, labels, np.stack([scores, scores])) == pytest.approx((low, high))


def test_evaluate_pairs_records_the_interval():
    users, labels, scores = synthetic_pairs(60)
    frame = pd.DataFrame({"user": users, "item": [f"i{k}" for k in range(len(users))], "label": labels})
    summary, _ = evaluate_pairs(frame, scores)
    overall = summary["overall"]
    assert (overall["auc_ci_low"], overall["auc_ci_high"]) == pytest.approx(auc_interval(users, labels, scores))


def test_ctr_table_prints_auc_with_its_interval_per_shot_count(tmp_path):
    from bench.records import ResultStore
    from bench.report.latex import escape
    from bench.report.tables import (
        ctr_caption_note,
        ctr_intervals,
        ctr_sample_note,
        ctr_segment_table,
        ctr_table,
    )

    store = ResultStore(tmp_path)
    users, labels, base = synthetic_pairs(100)
    rows, runs = [], {}
    for method, signal in (("mf-ctr", 0.2), ("tallrec", 1.0)):
        for shots in (16, 64):
            for seed in (0, 1):
                run_id = f"{method}-{shots}-{seed}"
                rng = np.random.default_rng(hash((method, shots, seed)) % 2**32)
                score = signal * labels + rng.normal(0, 1, len(labels))
                pairs = pd.DataFrame({"user": users, "item": [f"i{k}" for k in range(len(users))],
                                      "label": labels, "segment": "warm", "score": score})
                (store.run_dir(run_id)).mkdir(parents=True, exist_ok=True)
                pairs.sample(frac=1, random_state=seed).to_csv(store.run_dir(run_id) / "pairs.csv.gz", index=False)
                runs[run_id] = score
                base_row = {"run_id": run_id, "dataset": "ml-100k", "split": f"ctr_temporal [shots={shots}]",
                            "backbone": "none", "method": method, "seed": seed, "trainable": 10, "frozen": 0,
                            "train_s": 1.0, "latency_ms": 0.1, "capped": False}
                for segment in ("overall", "pair:warm"):
                    rows.append({**base_row, "segment": segment, "auc": auc(labels, score), "uauc": 0.5,
                                 "n_pairs": len(labels), "n_users": 100})
    frame = pd.DataFrame(rows)
    intervals = ctr_intervals(frame, store)
    key = ("ml-100k", "ctr_temporal [shots=64]", "none", "tallrec")
    expected = auc_interval(users, labels, np.stack([runs["tallrec-64-0"], runs["tallrec-64-1"]]))
    assert intervals[key] == pytest.approx(expected)  # saved pairs realigned whatever their order
    table = ctr_table(frame, intervals).set_index("Method")
    cell = table.loc["tallrec", "shots=64 AUC [95% CI]"]
    mean = np.mean([auc(labels, runs["tallrec-64-0"]), auc(labels, runs["tallrec-64-1"])])
    assert cell.startswith(f"{mean:.4f} ± ") and cell.endswith(f"[{expected[0]:.3f}, {expected[1]:.3f}]")
    assert table.loc["mf-ctr", "shots=16 seeds"] == 2
    segments = ctr_segment_table(frame).set_index("Method")
    assert segments.loc["tallrec", "shots=16 warm AUC"].endswith(f"(n={len(labels)})")
    assert segments.loc["tallrec", "shots=16 cold AUC"] == "—"
    note = ctr_sample_note(frame, intervals)
    assert f"Test pairs per run: {len(labels)}" in note and "half-widths" in note
    widths = [(high - low) / 2 for low, high in intervals.values()]
    caption = ctr_caption_note(frame, intervals)
    assert f"±{min(widths):.3f} to ±{max(widths):.3f} ({len(labels)} test pairs" in caption
    assert r"$\pm$" in escape(caption) and r"95\%" in escape(caption)
    # a run without saved pairs: its cell prints no interval rather than one from fewer seeds
    (store.run_dir("tallrec-64-1") / "pairs.csv.gz").unlink()
    assert key not in ctr_intervals(frame, store)


def test_cf_valid_auc_column_shows_the_all_pair_models_and_names_collm_encoders():
    """The `CF valid AUC (all pairs)` column: a CF row's models on every training pair (not its few-shot ones),
    a CoLLM row's encoders once per seed (every shot count maps the same one); the note says which CF row's
    models the encoders are, from the cache keys; rows without a CF model print "—"."""
    from bench.report.tables import CF_COLUMN, cf_encoder_lines, cf_model_facts, ctr_table

    assert cf_model_facts({"method_info": {}})["cf_key"] == ""
    assert cf_model_facts({"method_info": {"cf": {"key": "k", "n_train_pairs": 9, "best_valid_auc": .6}}}) == {
        "cf_key": "k", "cf_pairs": 9, "cf_valid_auc": .6, "cf_role": "mapped"}
    assert cf_model_facts({"method_info": {"training": {"key": "k", "best_valid_auc": .6}}})["cf_role"] == "trained"
    rows = []

    def add(method, shots, seed, key, pairs, value):
        role = "" if not key else "mapped" if method.startswith("collm") else "trained"
        base = {"cf_role": role, "run_id": f"{method}-{shots}-{seed}", "dataset": "d", "split": f"ctr_temporal [shots={shots}]",
                "backbone": "none", "method": method, "seed": seed, "trainable": 1, "frozen": 0, "train_s": 1.0,
                "latency_ms": 0.1, "capped": False, "cf_key": key, "cf_pairs": pairs, "cf_valid_auc": value}
        rows.append({**base, "segment": "overall", "auc": 0.6, "uauc": 0.6, "n_pairs": 10, "n_users": 5})

    for seed, value in ((0, 0.60), (1, 0.64)):
        add("mf-ctr", 0, seed, f"mf{seed}", 1000, value)
        add("mf-ctr", 16, seed, f"few{seed}", 16, 0.51)  # a few-shot model: not in the column
        for shots in (16, 64):
            add("collm-mf", shots, seed, f"mf{seed}", 1000, value)
    add("collm-din", 16, 0, "din0", 1000, 0.7)  # an encoder no CF row trained
    add("tallrec", 16, 0, "", np.nan, np.nan)
    table = ctr_table(pd.DataFrame(rows)).set_index("Method")
    assert table.loc["mf-ctr", CF_COLUMN] == table.loc["collm-mf", CF_COLUMN] == "0.6200 ± 0.0283"
    assert table.loc["tallrec", CF_COLUMN] == "—"
    lines = "\n".join(cf_encoder_lines(pd.DataFrame(rows)))
    assert "collm-mf: its 2 CF encoder(s) (mf0, mf1) are the very models of the `mf-ctr` row" in lines
    assert "collm-din: its 1 CF encoder(s) (din0); 1 without a stored CF row run" in lines


def manual_paired_bootstrap(users, labels, scores_a, scores_b, n: int, seed: int):
    """Independent of scipy: one draw of users for both sides, AUCs by sklearn; (CI of the relative gain,
    two-sided p of no difference)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    codes = np.unique(users)
    rows = {u: np.flatnonzero(users == u) for u in codes}
    rel, diff = [], []
    for _ in range(n):
        chosen = np.concatenate([rows[u] for u in rng.choice(codes, len(codes), replace=True)])
        a, b = roc_auc_score(labels[chosen], scores_a[chosen]), roc_auc_score(labels[chosen], scores_b[chosen])
        rel.append(a / b - 1)
        diff.append(a - b)
    diff = np.array(diff)
    return tuple(np.percentile(rel, [2.5, 97.5])), 2 * min((diff <= 0).mean(), (diff >= 0).mean())


def test_auc_difference_matches_an_independent_paired_cluster_bootstrap():
    """Two models on the same pairs, users as the unit: interval of the relative AUC gain and the p of no
    difference agree with a hand-written paired cluster bootstrap; a model against itself: p = 1."""
    from bench.eval.pointwise import auc_difference

    users, labels, scores_a = synthetic_pairs(120, signal=0.9)
    rng = np.random.default_rng(5)
    scores_b = np.round(0.5 * scores_a + rng.normal(0, 1, len(scores_a)), 1)  # correlated with A, weaker
    result = auc_difference(users, labels, scores_a, scores_b)
    (ref_low, ref_high), ref_p = manual_paired_bootstrap(users, labels, scores_a, scores_b, 2000, seed=3)
    assert result["relative"] == pytest.approx(auc(labels, scores_a) / auc(labels, scores_b) - 1)
    assert result["ci_low"] == pytest.approx(ref_low, abs=0.015) and result["ci_high"] == pytest.approx(ref_high,
                                                                                                        abs=0.015)
    assert result["p"] == pytest.approx(ref_p, abs=0.03)
    assert result["n_users"] == 120 and result["n_pairs"] == len(labels)
    # a model against itself: p 1 and no gain
    assert auc_difference(users, labels, scores_a, scores_a)["p"] == 1.0
    same = auc_difference(users, labels, scores_a, np.stack([scores_a, scores_a]))
    assert same["relative"] == 0 and same["ci_low"] == same["ci_high"] == 0


def test_auc_comparisons_use_the_shared_test_pairs_with_the_user_as_unit(tmp_path):
    """bench compare / claims on AUC: runs that scored the same pairs (any order) are tested by the paired
    user bootstrap, whose p decides; runs on different pairs, or without sidecars, fall back to the seed t."""
    from types import SimpleNamespace

    from bench.records import ResultStore
    from bench.report.stats import compare_pairs, decisive_p

    store = ResultStore(tmp_path)
    users, labels, strong = synthetic_pairs(100, signal=1.2)
    rng = np.random.default_rng(2)
    specs = {}
    for name, scores in (("a0", strong), ("a1", strong + rng.normal(0, 0.3, len(strong))),
                         ("b0", rng.normal(0, 1, len(strong))), ("b1", rng.normal(0, 1, len(strong)))):
        frame = pd.DataFrame({"user": users, "item": [f"i{k}" for k in range(len(users))], "label": labels,
                              "segment": "warm", "score": scores})
        store.run_dir(name).mkdir(parents=True, exist_ok=True)
        frame.sample(frac=1, random_state=len(specs)).to_csv(store.run_dir(name) / "pairs.csv.gz", index=False)
        specs[name] = SimpleNamespace(run_id=name)
    pairs = [(specs["a0"], specs["b0"]), (specs["a1"], specs["b1"])]
    result = compare_pairs(store, pairs, "auc")
    assert result["unit"] == "users-bootstrap" and result["n_seeds"] == 2 and result["n_users"] == 100
    assert decisive_p(result) == result["bootstrap_p"] < 0.01 and result["mean_a"] > result["mean_b"]
    assert result["ci_low"] > 0 and result["ttest_p"] == result["ttest_p"]  # the seed-level t beside it
    assert compare_pairs(store, pairs, "uauc") is None  # only AUC is recomputed from the pairs
    other = pd.read_csv(store.run_dir("b1") / "pairs.csv.gz")
    other.loc[0, "label"] = 1 - other.loc[0, "label"]
    other.to_csv(store.run_dir("b1") / "pairs.csv.gz", index=False)
    assert compare_pairs(store, pairs, "auc") is None  # not the same labelled pairs
    (store.run_dir("b1") / "pairs.csv.gz").unlink()
    assert compare_pairs(store, pairs, "auc") is None


def test_ctr_markdown_names_shots_zero_per_row_kind_and_marks_missing_and_seeds():
    """The ctr main table as Markdown (the page-wide LaTeX grid): shots 0 is "all pairs / zero-shot", the notes
    say which rows trained on every pair and which answered zero-shot; a few-shot row the suite skips at shots
    0 prints "n/a", a defined cell without a record "not run", a cell on fewer seeds than the table's says so;
    the CSV table keeps its columns and ids."""
    from bench.report.latex import grid_frame, main_grid, shots_note
    from bench.report.tables import ctr_table

    rows = []

    def add(method, shots, seed, trainable, value):
        rows.append({"run_id": f"{method}-{shots}-{seed}", "dataset": "ml-100k", "split": f"ctr_temporal [shots={shots}]",
                     "backbone": "none", "method": method, "seed": seed, "trainable": trainable, "frozen": 0,
                     "train_s": 1.0, "latency_ms": 0.1, "capped": False, "protocol": "pointwise",
                     "segment": "overall", "auc": value, "uauc": value, "n_pairs": 10, "n_users": 5})

    for seed in range(3):
        add("mf-ctr", 0, seed, 100, 0.60 + 0.01 * seed)
        add("mf-ctr", 16, seed, 100, 0.50)
    add("icl", 0, 0, 0, 0.52)
    add("tallrec", 16, 0, 10, 0.55)
    frame = pd.DataFrame(rows)
    defined = [("ml-100k", "ctr_temporal [shots=0]", "none", "mf-ctr"), ("ml-100k", "ctr_temporal [shots=16]", "none",
                                                                          "mf-ctr"),
               ("ml-100k", "ctr_temporal [shots=0]", "none", "icl"), ("ml-100k", "ctr_temporal [shots=16]", "none",
                                                                      "tallrec"),
               ("ml-100k", "ctr_temporal [shots=64]", "none", "tallrec")]
    grid, metrics, _ = main_grid(frame, "page", defined=defined)
    table = grid_frame(grid).set_index("Method")
    assert metrics == ("auc", "uauc") and list(table.columns) == [
        "all pairs / zero-shot: AUC", "all pairs / zero-shot: UAUC", "16 shots: AUC", "16 shots: UAUC",
        "64 shots: AUC", "64 shots: UAUC"]
    assert table.loc["MF", "all pairs / zero-shot: AUC"] == "0.6100 ± 0.0100"
    assert table.loc["ICL", "all pairs / zero-shot: AUC"] == "0.5200 (1 seed)"
    assert table.loc["TALLRec", "all pairs / zero-shot: AUC"] == "n/a"  # the suite skips it there
    assert table.loc["TALLRec", "64 shots: AUC"] == "not run" and table.loc["MF", "64 shots: AUC"] == "n/a"
    note = shots_note(grid.facts, latex=False)
    assert "MF trained on every training pair" in note and "ICL asked zero-shot" in note
    assert "own model" not in str(grid.facts["used"])  # no backbone column printed, none keyed
    assert "shots=0 seeds" in ctr_table(frame).columns  # the CSV keeps its full width and ids
    assert set(ctr_table(frame)["Method"]) == {"mf-ctr", "icl", "tallrec"}
