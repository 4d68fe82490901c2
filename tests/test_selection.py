"""Selections never choose silently between variants of a method (issue 24, item 5): a side matching two
variants in one context is an error naming the settings that tell them apart; a selector naming the
setting (`method.train_dataset=null` for the one left at None) resolves it; the built-in claims each name
the variant they mean in the committed records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.records import ResultStore
from bench.report.claims import Claim, load_claims
from bench.report.compare import compare_report
from bench.selection import field_value, matches, pair, parse_selector, stored_specs
from bench.spec import RunSpec

RESULTS = Path(__file__).resolve().parent.parent / "results"


def seq(method: str, seed: int, **settings) -> RunSpec:
    return RunSpec(dataset="ml-100k", split="temporal_loo", backbone="sasrec", method=method,
                   method_settings=settings, seed=seed)


def put(store: ResultStore, run: RunSpec, level: float) -> None:
    rng = np.random.default_rng(int(run.run_id[:8], 16))
    values = np.clip(level + rng.normal(0, 0.02, 50), 0, 1)
    per_user = pd.DataFrame({"user": [str(u) for u in range(50)], "ndcg@10": values})
    store.write(run.run_id, {"status": "complete", "run_id": run.run_id, "spec": run.model_dump(mode="json"),
                             "metrics": {"overall": {"ndcg@10": float(values.mean()), "n_users": 50}},
                             "params": {"trainable": 1}, "latency": {"median_ms": 1.0}, "timings": {"train": 1.0},
                             "provenance": {"split_hash": "x"}}, per_user)


@pytest.fixture
def store(tmp_path) -> ResultStore:
    """llm2rec trained in-domain (train_dataset left at None) and on ml-1m, 3 seeds each, and random."""
    store = ResultStore(tmp_path / "results")
    for seed in range(3):
        put(store, seq("llm2rec", seed), 0.30)
        put(store, seq("llm2rec", seed, train_dataset="ml-1m"), 0.20)
        put(store, seq("random", seed), 0.25)
    return store


def test_two_variants_with_equal_seeds_are_an_error_naming_the_setting(store):
    specs = stored_specs(store)
    with pytest.raises(BenchError) as err:
        pair(specs, {}, {"method": "llm2rec"}, {"method": "random"})
    message = str(err.value)
    assert "\n" not in message
    assert "`llm2rec` matches 2 variants in ml-100k/temporal_loo/sasrec" in message
    assert "method.train_dataset = " in message and "null (3 seeds)" in message and "'ml-1m' (3 seeds)" in message
    assert "add method.train_dataset=... to the selection" in message
    assert "fewer seeds" not in message
    # either side: B ambiguous too
    with pytest.raises(BenchError, match="method.train_dataset"):
        pair(specs, {}, {"method": "random"}, {"method": "llm2rec"})


def test_naming_the_variant_resolves_it(store):
    specs = stored_specs(store)
    transfer = pair(specs, {}, {"method": "llm2rec", "method.train_dataset": "ml-1m"}, {"method": "random"})
    assert len(transfer) == 1 and transfer[0].seeds == [0, 1, 2]
    assert {s.method_settings["train_dataset"] for s in transfer[0].runs_a} == {"ml-1m"}
    # the CLI spelling, as `bench compare` parses it
    for text in ("method=llm2rec,method.train_dataset=null", "method=llm2rec,method.train_dataset=None"):
        selector = parse_selector(text)
        (own,) = pair(specs, {}, selector, {"method": "random"})
        assert own.seeds == [0, 1, 2] and {s.method_settings["train_dataset"] for s in own.runs_a} == {None}
        assert {s.run_id for s in own.runs_a}.isdisjoint(s.run_id for s in transfer[0].runs_a)


def test_null_selects_the_setting_left_at_none_and_nothing_else():
    unset, named = seq("llm2rec", 0), seq("llm2rec", 0, train_dataset="ml-1m")
    assert field_value(unset, "method.train_dataset") is None
    for null in (None, "None", "null"):
        assert matches(unset, {"method.train_dataset": null})
        assert not matches(named, {"method.train_dataset": null})
    assert matches(named, {"method.train_dataset": [None, "ml-1m"]})  # a list: any of
    assert not matches(unset, {"method.train_dataset": "ml-1m"})
    assert parse_selector("method.train_dataset=null") == {"method.train_dataset": None}


def test_one_variant_is_no_error(store):
    specs = [s for s in stored_specs(store) if s.method_settings.get("train_dataset") != "ml-1m"]
    (pairing,) = pair(specs, {}, {"method": "llm2rec"}, {"method": "random"})
    assert pairing.seeds == [0, 1, 2] and pairing.other_variants == 0
    assert len(pairing.runs_a) == len(pairing.runs_b) == 3


def test_variants_that_differ_in_several_settings_name_them_all(tmp_path):
    store = ResultStore(tmp_path / "results")
    for seed in range(2):
        put(store, seq("llm2rec", seed), 0.3)
        put(store, seq("llm2rec", seed, train_dataset="ml-1m", pooling="bidirectional_mean"), 0.2)
        put(store, seq("random", seed), 0.25)
    put(store, seq("llm2rec", 2, train_dataset="ml-1m", pooling="bidirectional_mean"), 0.2)
    with pytest.raises(BenchError) as err:
        pair(stored_specs(store), {}, {"method": "llm2rec"}, {"method": "random"})
    message = str(err.value)
    assert "method.pooling, method.train_dataset differ" in message
    assert "method.train_dataset = null (2 seeds)" in message and "method.train_dataset = 'ml-1m' (3 seeds)" in message


def test_compare_command_refuses_an_ambiguous_side_with_exit_code_2(store, capsys):
    root = str(store.root)
    assert main(["compare", "llm2rec", "random", "--results", root, "--metric", "ndcg@10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "method.train_dataset" in err and "'ml-1m'" in err
    assert main(["compare", "method=llm2rec,method.train_dataset=null", "random", "--results", root,
                 "--metric", "ndcg@10"]) == 0
    report = compare_report(store, stored_specs(store), "method=llm2rec,method.train_dataset=ml-1m", "random", {},
                            ("ndcg@10",))
    assert "seeds [0, 1, 2]" in report


def comparisons(claim: Claim, specs: list[RunSpec]) -> list[tuple[dict, dict, dict]]:
    """(where, A, B) of every comparison a claim makes (bench/report/claims.py), statistics left out."""
    if claim.kind == "better":
        return [(claim.where, claim.a, claim.b)]
    if claim.kind == "order":
        return [(claim.where, hi, lo) for hi, lo in zip(claim.chain, claim.chain[1:])]
    if claim.kind == "larger_gain":
        return [({**claim.where, **side}, claim.a, claim.b) for side in (claim.larger, claim.smaller)]
    pool = [s for s in specs if matches(s, {**claim.where, **claim.select})]
    values = {v for s in pool if (v := field_value(s, claim.axis)) is not None}
    return [(claim.where, {**claim.select, claim.axis: claim.at}, {**claim.select, claim.axis: v})
            for v in sorted(values, key=float) if float(v) > float(claim.at)]


def test_builtin_claims_name_one_variant_in_the_committed_records():
    """Every claim's selectors pick one variant per side in the committed records (read only): none hits
    the ambiguity error, and each pairs at least one context unless a side has no stored run at all (a claim
    not run yet, e.g. while its runs are being redone)."""
    if not any((RESULTS / "runs").glob("*/record.json")):
        pytest.skip("no committed run records")
    specs = stored_specs(ResultStore(RESULTS))
    problems, unpaired = [], []
    for claim in load_claims().claims:
        steps = comparisons(claim, specs)
        for where, a, b in steps:
            try:
                stored = [any(matches(spec, {**where, **side}) for spec in specs) for side in (a, b)]
                if not pair(specs, where, a, b) and all(stored):
                    unpaired.append(f"{claim.id}: {a} vs {b}")
            except BenchError as exc:
                problems.append(f"{claim.id}: {exc}")
        if not steps:
            unpaired.append(claim.id)
    assert not problems, "\n".join(problems)
    assert not unpaired, "\n".join(unpaired)


def test_a_record_written_before_a_setting_existed_shares_its_context_with_a_newer_one():
    """A dataset setting added since (`columns`, default {}) moves no run id; an older record without it and a
    newer one with its default are one context, so claims and `bench compare` pair their seeds."""
    from bench.data.cards import load_card
    from bench.selection import context_key, current_settings

    card = load_card("ml-100k").model_dump(mode="json")
    older = {k: v for k, v in card.items() if k != "columns"}
    specs = [RunSpec(dataset="ml-100k", dataset_settings=settings, split="temporal_loo", backbone="lightgcn",
                     method="random", seed=seed) for seed, settings in ((0, older), (1, card))]
    assert specs[0].dataset_settings != specs[1].dataset_settings
    assert context_key(specs[0]) != context_key(specs[1])  # as stored: two contexts
    filled = [current_settings(s) for s in specs]
    assert [s.run_id for s in filled] == [s.run_id for s in specs]
    assert context_key(filled[0]) == context_key(filled[1])
