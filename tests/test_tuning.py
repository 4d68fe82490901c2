"""`bench tune` (bench/tuning.py) and the search spaces declared on settings classes (bench/search.py).

Trials run through a fake runner (records made up from the sampled settings, epochs reported through the real
reporter hook), so these tests train nothing; the studies are real Optuna studies in a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping

import pytest
import yaml
from pydantic import BaseModel

import bench.runner
from bench import tuning
from bench.catalog import METHODS
from bench.errors import BenchError
from bench.search import Choice, FloatRange, IntRange, Nested, declared, field_class, space_of
from bench.settings import validate_settings
from bench.spec import Suite, expand, load_suite, suite_names
from methods.backbones.cf import BACKBONES

# ------------------------------------------------------------------------------------------ search spaces


def _settings_classes() -> set[type[BaseModel]]:
    """Every backbone and method settings class, and the settings classes nested in them."""
    todo = [spec.settings for spec in BACKBONES.values()] + [METHODS.get(m).Settings for m in METHODS.names()]
    seen: set[type[BaseModel]] = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo += [sub for name in cls.model_fields if (sub := field_class(cls, name)) is not None]
    return seen


def test_every_declared_range_names_a_field_and_holds_its_default():
    checked = 0
    for cls in _settings_classes():
        defaults = cls()
        for name, param in declared(cls).items():
            assert name in cls.model_fields, f"{cls.__name__}.search_space names {name!r}, not one of its fields"
            assert "search_space" not in cls.model_fields  # a ClassVar: no setting, no run id
            if isinstance(param, Nested):
                # a settings object (its class may search nothing: ICL's LLM in icl-rerank)
                assert field_class(cls, name) is not None, f"{cls.__name__}.{name}: Nested needs a settings field"
                continue
            default = getattr(defaults, name)
            assert param.contains(default), f"{cls.__name__}.{name}: default {default!r} outside {param.describe()}"
            for bound in param.bounds():  # every end of the range is a valid value of the setting
                validate_settings(cls, {name: bound}, cls.__name__)
            checked += 1
    assert checked >= 10


def test_entry_defaults_lie_in_their_searched_space():
    """Each registry entry's defaults (its preset applied) are a point of its space: the defaults trial exists."""
    for method in METHODS.names():
        values = METHODS.defaults(method)
        for name, param in space_of(METHODS.get(method).Settings, values, set(METHODS.preset(method))).items():
            value = values
            for part in name.split("."):
                value = value[part]
            assert param.contains(value), (method, name, value)


def test_declared_spaces():
    assert set(space_of(BACKBONES["lightgcn"].settings)) == {"learning_rate", "weight_decay", "reg_weight", "n_layers"}
    assert {"hidden_dropout_prob", "attn_dropout_prob"} <= set(space_of(BACKBONES["sasrec"].settings))
    assert "dropout_prob" in space_of(BACKBONES["gru4rec"].settings)
    assert space_of(BACKBONES["none"].settings) == {}  # trains nothing
    assert space_of(BACKBONES["mf"].settings)["weight_decay"].contains(0.0)  # the default 0 is a choice
    # a stage's lr only where the entry runs that stage; ICL tunes nothing; LoRA rank is a choice
    assert set(space_of(METHODS.get("llm2rec-csft").Settings, METHODS.defaults("llm2rec-csft"))) == {"csft.lr"}
    assert set(space_of(METHODS.get("llm2rec").Settings, METHODS.defaults("llm2rec"))) == {"csft.lr", "mntp.lr", "ic.lr"}
    assert space_of(METHODS.get("icl").Settings) == {}
    tallrec = space_of(METHODS.get("tallrec").Settings)
    assert set(tallrec) == {"learning_rate", "lora.r"} and tallrec["lora.r"].values == (4, 8, 16)
    assert "llm.lora.r" in space_of(METHODS.get("tallrec-rerank").Settings)
    assert "dropout" not in space_of(METHODS.get("mf-ctr").Settings, METHODS.defaults("mf-ctr"))
    assert "dropout" in space_of(METHODS.get("din").Settings, METHODS.defaults("din"))


def test_range_types_refuse_bad_bounds():
    with pytest.raises(ValueError):
        FloatRange(low=0.0, high=1.0, log=True)
    with pytest.raises(ValueError):
        IntRange(low=3, high=1)
    with pytest.raises(ValueError):
        Choice(values=(1, 1))


# ------------------------------------------------------------------------------------- cells, trial specs


def _suite(**fields) -> Suite:
    base = {"name": "t", "datasets": ["ml-100k"], "splits": ["temporal_loo"], "backbones": ["lightgcn"],
            "methods": ["random"], "seeds": [0, 1], "backbone_settings": {"epochs": 3}}
    return Suite.model_validate({**base, **fields})


def test_trial_spec_sets_sampled_values_and_keeps_the_rest():
    (cell,) = tuning.suite_cells(_suite())
    assert cell.study == "t:ml-100k/temporal_loo/lightgcn/random" and cell.base.seed == 0
    assert tuning.trial_spec(cell.base, {}).run_id == cell.base.run_id  # no value: the suite's own run
    spec = tuning.trial_spec(cell.base, {"backbone.learning_rate": 0.003, "backbone.n_layers": 1})
    assert spec.backbone_settings["learning_rate"] == 0.003 and spec.backbone_settings["epochs"] == 3
    assert spec.run_id != cell.base.run_id
    # nested: LLM2Rec's CSFT lr, the suite's other CSFT settings kept
    (seq,) = tuning.suite_cells(_suite(backbones=["sasrec"], methods=["llm2rec-csft"],
                                       method_settings={"llm2rec-csft": {"csft": {"max_steps": 40}}}))
    assert "method.csft.lr" in seq.space and "method.mntp.lr" not in seq.space
    nested = tuning.trial_spec(seq.base, {"method.csft.lr": 1e-4})
    assert nested.method_settings["csft"]["lr"] == 1e-4 and nested.method_settings["csft"]["max_steps"] == 40


def test_cells_tell_variants_apart_and_choose_by_name():
    suite = _suite(methods=["random", "llminit-var"], grid={"backbone.embedding_size": [32, 64]})
    keys = [c.key for c in tuning.suite_cells(suite)]
    assert "ml-100k/temporal_loo/lightgcn/random[backbone.embedding_size=32]" in keys and len(keys) == 4
    assert [c.base.method for c in tuning.suite_cells(suite, {"method": ["random"]})] == ["random", "random"]
    with pytest.raises(BenchError, match="method of suite 't'.*nosuch"):
        tuning.suite_cells(suite, {"method": ["nosuch"]})


# --------------------------------------------------------------------------------- the objective


class _TestDataGuard(dict):
    """A record whose every part but method_info raises when read: the objective may read validation only."""

    def __getitem__(self, key):
        if key != "method_info":
            raise AssertionError(f"the objective read record[{key!r}]")
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default


RECORDS = [
    ({"training": {"best_valid_score": 0.0412, "valid_metric": "NDCG@10"}}, (0.0412, "NDCG@10")),
    ({"training": {"best_valid_auc": 0.61, "n_valid_pairs": 10}}, (0.61, "AUC")),  # pointwise CF rows
    ({"cf": {"best_valid_auc": 0.7}, "stage1": {"selection": {"best_valid_auc": 0.5}},
      "stage2": {"selection": {"best_valid_auc": 0.55}}}, (0.55, "AUC")),  # CoLLM: its last step
]


@pytest.mark.parametrize("info,expected", RECORDS)
def test_objective_reads_validation_only(info, expected):
    record = {"method_info": info, "metrics": {"overall": {"ndcg@10": 0.1}}, "per_user": "x"}
    assert tuning.validation_score(record) == expected
    altered = {**record, "metrics": {"overall": {"ndcg@10": 0.9, "auc": 0.99}}}  # other test results
    assert tuning.validation_score(altered) == expected
    assert tuning.validation_score(_TestDataGuard(record)) == expected  # no other key is read


def test_objective_without_a_validation_score_is_refused():
    with pytest.raises(BenchError, match="no validation score"):
        tuning.validation_score({"method_info": {"llm": {}}})


# ------------------------------------------------------------------------------- studies, fake trials


def _score(spec) -> float:
    """A made-up validation score: best at learning rate 1e-3, one layer."""
    lr = spec.backbone_settings["learning_rate"]
    return 0.05 - 0.01 * (math.log10(lr) + 3) ** 2 - 0.002 * spec.backbone_settings["n_layers"]


class FakeRunner(tuning.TrialRunner):
    """Makes each run's record from its settings; with `epochs`, reports them the way the runner's reporter
    does (through a RunProgress reporter, which the pruner hears: bench.progress.observing)."""

    def __init__(self, results, epochs: int = 0, interrupt_at: int | None = None):
        super().__init__(results, results / "cache")
        self.records: dict[str, dict] = {}
        self.ran: list[str] = []
        self.epochs, self.interrupt_at = epochs, interrupt_at

    def stored(self, run_id):
        return run_id in self.records

    def load(self, run_id):
        return self.records.get(run_id)

    def execute(self, specs, requested, reporting):
        for spec in specs:
            if spec.run_id in self.records:
                continue
            if self.interrupt_at is not None and len(self.ran) == self.interrupt_at:
                raise KeyboardInterrupt
            self.ran.append(spec.run_id)
            value = _score(spec)
            reporter = bench.runner.RunProgress(None)
            for epoch in range(1, self.epochs + 1):  # a curve rising to the final value
                reporter.update("train", epoch, self.epochs, unit="epoch",
                                **{"valid NDCG@10": value * epoch / self.epochs})
            self.records[spec.run_id] = {
                "method_info": {"training": {"best_valid_score": value, "valid_metric": "NDCG@10"}},
                "timings": {"prepare": 1.0, "fit_total": 2.0, "evaluate": 0.5},
                "provenance": {"machine": {"torch_threads": 1}}}


def _tune(tmp_path, runner, trials, **kwargs):
    return tuning.tune("smoke", cells={"method": ["random"]}, trials=trials, results=tmp_path, runner=runner,
                       say=lambda line: None, **kwargs)


def _study(tmp_path):
    import optuna

    return optuna.load_study(study_name="smoke:ml-100k/temporal_loo/lightgcn/random",
                             storage=f"sqlite:///{tmp_path / 'tuning' / 'smoke.db'}")


def test_a_stopped_study_resumes_with_the_missing_trials_only(tmp_path):
    runner = FakeRunner(tmp_path)
    (row,) = _tune(tmp_path, runner, 2)
    assert row["trials"] == 2 and len(runner.ran) == 2
    first_two = list(runner.ran)
    (cell,) = tuning.suite_cells(load_suite("smoke"), {"method": ["random"]})
    assert first_two[0] == cell.base.run_id  # trial 0: the suite's own settings (the run bench run makes)
    (row,) = _tune(tmp_path, runner, 3)  # again, asking for 3: one more trial runs
    assert len(runner.ran) == 3 and runner.ran[:2] == first_two
    study = _study(tmp_path)
    assert [t.number for t in study.trials] == [0, 1, 2] and row["trials"] == 3
    assert [t.user_attrs["run_id"] for t in study.trials] == runner.ran
    assert study.trials[0].user_attrs["defaults"] is True and row["default_value"] == pytest.approx(_score(cell.base))
    assert study.user_attrs["trials_asked"] == 3 and study.user_attrs["trials_complete"] == 3
    assert study.user_attrs["pruner"] == "median" and study.user_attrs["sampler_seed"] == 0
    assert row["cpu_minutes"] >= 0 and row["wall_minutes"] == pytest.approx(3 * 3.5 / 60)
    assert row["best_value"] == max(t.value for t in study.trials) and row["metric"] == "NDCG@10"
    # the same trial numbers sample the same settings in a study run in one go (TPE reseeded per trial)
    other = tmp_path / "other"
    _tune(other, FakeRunner(other), 3)
    assert [t.params for t in _study(other).trials] == [t.params for t in study.trials]
    assert _tune(tmp_path, runner, 3) and len(runner.ran) == 3  # nothing missing: nothing runs


def test_a_trial_interrupted_mid_run_is_rerun_with_its_settings(tmp_path):
    runner = FakeRunner(tmp_path, interrupt_at=1)
    with pytest.raises(KeyboardInterrupt):
        _tune(tmp_path, runner, 3)
    interrupted = _study(tmp_path).trials[1].params
    runner.interrupt_at = None
    _tune(tmp_path, runner, 3)
    trials = _study(tmp_path).trials
    assert trials[1].user_attrs["interrupted"] is True and trials[2].params == interrupted
    assert trials[2].user_attrs["retry_of"] == 1
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3


def test_median_pruner_stops_a_hopeless_trial_between_epochs(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "MEDIAN_PRUNER", {"n_startup_trials": 2, "n_warmup_steps": 1})
    runner = FakeRunner(tmp_path, epochs=6)
    (row,) = _tune(tmp_path, runner, 8, pruner="median")
    trials = _study(tmp_path).trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and row["pruned"] == len(pruned) and row["trials"] == 8
    assert all(t.user_attrs["pruned"] and t.user_attrs["run_id"] not in runner.records for t in pruned)
    assert bench.runner.RunProgress.__name__ == "RunProgress"  # the hook is put back
    assert all(len(t.intermediate_values) == 6 for t in trials if t.state.name == "COMPLETE")


def test_resuming_with_another_seed_or_pruner_is_refused(tmp_path):
    runner = FakeRunner(tmp_path)
    _tune(tmp_path, runner, 1)
    with pytest.raises(BenchError, match="created with --seed 0"):
        _tune(tmp_path, runner, 2, seed=1)
    with pytest.raises(BenchError, match="created with --pruner median"):
        _tune(tmp_path, runner, 2, pruner="none")
    assert len(runner.ran) == 1


def test_parallel_trials_refuse_the_median_pruner(tmp_path):
    runner = FakeRunner(tmp_path)
    runner.batch = 2
    with pytest.raises(BenchError, match="--pruner median stops"):
        _tune(tmp_path, runner, 2, pruner="median")
    (row,) = _tune(tmp_path, runner, 4)  # default with parallel trials: no pruner; two trials per batch
    assert row["pruner"] == "none" and row["trials"] == 4 and len(runner.ran) == 4


# ------------------------------------------------------------------------------ budget, tuned profile


def _row(study, trials, pruner="median"):
    return {"study": study, "trials": trials, "pruner": pruner, "cpu_minutes": trials * 0.5}


def test_unequal_budgets_are_refused():
    tuning.check_equal_budget([_row("s:a", 4), _row("s:b", 4)])
    with pytest.raises(BenchError, match=r"budgets differ.*s:a: 4 trials, 2.0 CPU-min.*s:b: 6 trials"):
        tuning.check_equal_budget([_row("s:a", 4), _row("s:b", 6)])
    with pytest.raises(BenchError, match="pruner none"):
        tuning.check_equal_budget([_row("s:a", 4), _row("s:b", 4, "none")])


def test_tuned_profile_reruns_the_best_trials_with_every_seed(tmp_path, monkeypatch):
    target = tmp_path / "tuned" / "smoke.yaml"
    monkeypatch.setattr("bench.spec.tuned_profiles_path", lambda name: target)
    runner = FakeRunner(tmp_path)
    tuning.tune("smoke", trials=3, results=tmp_path, runner=runner, say=lambda line: None)
    rows = tuning.tuning_summary(tmp_path, "smoke")
    assert tuning.write_tuned_profile("smoke", tmp_path) == target
    document = yaml.safe_load(target.read_text())
    profile = document["profiles"]["tuned"]
    assert profile["notes"] == ("tuned: 3 trials per cell (TPE seed 0, pruner median), best of valid NDCG@10; "
                                "2 cells tuned")
    assert len(profile["parts"]) == 2 and profile["methods"] == []
    provenance = document["provenance"]["tuned"]["ml-100k/temporal_loo/lightgcn/random"]
    assert provenance["study"] == "smoke:ml-100k/temporal_loo/lightgcn/random" and provenance["trials"] == 3
    assert {"cpu_minutes", "best_value", "pruner", "sampler_seed", "best_run_id"} <= set(provenance)
    suite = load_suite("smoke", "tuned")
    assert suite.name == "smoke-tuned" and "tuned" not in suite_names()
    specs = expand(suite)
    best = {row["best_run_id"] for row in rows}
    assert best == {s.run_id for s in specs if s.seed == 0} and {s.seed for s in specs} == {0}
    assert tuning.tuned_provenance("smoke")["ml-100k/temporal_loo/lightgcn/random"]["trials"] == 3
    # cells tuned to different trial counts: no profile
    tuning.tune("smoke", cells={"method": ["random"]}, trials=4, results=tmp_path, runner=runner,
                say=lambda line: None)
    with pytest.raises(BenchError, match="budgets differ"):
        tuning.write_tuned_profile("smoke", tmp_path)


# ----------------------------------------------------------------------------------------------- CLI


def _args(tmp_path, *argv):
    parser = argparse.ArgumentParser()
    tuning.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["tune", "--results", str(tmp_path / "res"), "--cache", str(tmp_path / "cache"),
                              *argv])


@pytest.mark.parametrize("argv,message", [
    (["--suite", "smoke", "--trials", "0"], "--trials 0"),
    (["--suite", "smoke", "--method", "nosuch"], "nosuch"),
    (["--suite", "nosuch"], "nosuch"),
    (["--suite", "smoke", "--pruner", "median", "--workers", "2"], "--pruner median stops"),
    (["--suite", "smoke", "--seed", "-1"], "--seed -1"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, argv, message):
    with pytest.raises(BenchError, match=message):
        tuning.command(_args(tmp_path, *argv))
    assert not (tmp_path / "res" / "tuning").exists()


def test_summary_rows_are_mappings(tmp_path):
    _tune(tmp_path, FakeRunner(tmp_path), 1)
    (row,) = tuning.tuning_summary(tmp_path, "smoke")
    assert isinstance(row, Mapping) and row["method"] == "random" and row["best_settings"]["backbone"]


def test_the_pruner_hears_runs_whose_progress_is_not_shown():
    """The pruner listens through bench.progress.observing: every reporter's updates reach it, the no-op one a
    run gets without shown progress included, and only within the block."""
    from bench.progress import NO_PROGRESS, RunProgress, observing

    heard = []
    with observing(lambda stage, step, total, values: heard.append((stage, step, total, values))):
        RunProgress(None).update("train", 1, 3, unit="epoch", **{"valid NDCG@10": 0.1})
        NO_PROGRESS.update("train", 2, 3, unit="epoch")
    NO_PROGRESS.update("train", 3, 3, unit="epoch")
    assert heard == [("train", 1, 3, {"valid NDCG@10": 0.1}), ("train", 2, 3, {})]


def test_tables_say_whether_rows_are_tuned_and_mark_unequal_budgets(monkeypatch):
    """Every table's notes state tuned or default; a tuned profile's lists each cell's budget, and cells tuned with
    different trial counts are marked as no equal-budget comparison."""
    from bench.report.tables import tuning_lines

    assert tuning_lines("warm")[0].startswith("- tuning: none; every row runs at the suite's settings")
    cells = {"ml-100k/temporal_loo/sasrec/random": {"trials": 20, "cpu_minutes": 31.5, "pruner": "median",
                                                   "best_value": 0.09, "default_value": 0.08},
             "ml-100k/temporal_loo/sasrec/llminit-pca-seq": {"trials": 20, "cpu_minutes": 40.0, "pruner": "median",
                                                            "best_value": 0.1, "default_value": 0.1},
             "ml-100k/temporal_loo/sasrec/icl": {"tuned": False, "reason": "no search space declared"}}
    seen = {}

    def provenance(suite, profile):
        seen["asked"] = (suite, profile)
        return cells

    monkeypatch.setattr(tuning, "tuned_provenance", provenance)
    lines = tuning_lines("paradigms-tuned")
    assert seen["asked"] == ("paradigms", "tuned")
    assert "ml-100k/temporal_loo/sasrec/random 20 trials, 31.5 CPU-min, valid 0.09 (defaults 0.08)" in lines[0]
    assert lines[1] == "- not tuned: ml-100k/temporal_loo/sasrec/icl (no search space declared)"
    assert not any("UNEQUAL" in line for line in lines)
    cells["ml-100k/temporal_loo/sasrec/random"]["trials"] = 10
    assert "UNEQUAL TUNING BUDGETS" in tuning_lines("paradigms-tuned")[-1]


def _create_study_after(barrier, path, name):
    barrier.wait()  # every process opens the fresh database at once
    tuning._quiet_optuna().create_study(study_name=name, storage=tuning._storage(path), direction="maximize")


def test_processes_opening_a_fresh_study_database_at_once_all_succeed(tmp_path):
    """Two `bench tune` processes started together on a new results folder: both create the schema (without the
    lock the second fails with "table ... already exists")."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, path = context.Barrier(4), tmp_path / "tuning" / "suite.db"
    path.parent.mkdir()
    workers = [context.Process(target=_create_study_after, args=(barrier, path, f"s:{i}")) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * 4
    names = sorted(s.study_name for s in tuning._quiet_optuna().get_all_study_summaries(tuning._storage(path)))
    assert names == [f"s:{i}" for i in range(4)]


def test_a_best_value_at_the_end_of_its_range_is_named():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "p": FloatDistribution(0.0, 0.5),
             "layers": IntDistribution(1, 3), "wd": CategoricalDistribution([0.0, 1e-2])}
    assert tuning.at_edge({"lr": 9.9e-3, "p": 0.25, "layers": 2, "wd": 1e-2}, dists) == ["lr"]  # log scale
    assert tuning.at_edge({"lr": 1.1e-4, "p": 0.49, "layers": 1, "wd": 0.0}, dists) == ["lr", "p", "layers"]
    assert tuning.at_edge({"lr": 1e-3, "p": 0.1, "layers": 2, "wd": 0.0}, dists) == []


def test_tuned_vs_default_reads_each_untuned_verdict_from_the_untuned_table():
    """The committed paradigms studies: the tuned table's `default` gain of each row is the untuned suite's own
    (its significance family, as results/paradigms/significance.csv prints it), the tuned gain this table's."""
    import pandas as pd

    from bench.records import ResultStore
    from bench.report.tables import significance_results, tuned_vs_default

    store = ResultStore("results")
    suite = load_suite("paradigms", "tuned")
    specs = expand(suite)
    if not all(store.has(s.run_id) for s in specs):
        pytest.skip("the tuned paradigms runs are not all stored")
    tuned = significance_results(specs, store)
    table = tuned_vs_default(suite, specs, store, tuned).set_index(["Backbone", "Method"])
    default = pd.read_csv("results/paradigms/significance.csv", dtype=str).set_index(
        ["Split", "Backbone", "Method"]).loc["temporal_loo"]
    (holm,) = [c for c in default.columns if c.startswith("p (Holm, ")]  # the family size moves with the suite
    for (backbone, method), row in table.iterrows():
        assert row["Seeds (default / tuned)"] == "3 / 3"
        if method == "random":
            assert row["Gain vs baseline, default"] == row["Verdict"] == ""
            continue
        printed = default.loc[(backbone, method)]
        gain = float(printed["Gain % [95% CI]"].split("%")[0].replace("−", "-"))
        assert row["Gain vs baseline, default"].startswith(f"{gain:+.1f}%")
        assert f"(p {float(printed[holm]):.3f})" in row["Gain vs baseline, default"]
        assert row["Significant, default"] == (printed["Significant"] if printed["Significant"] != "no" else "no")
        mine = tuned.set_index(["Backbone", "Method"]).loc[(backbone, method)]
        assert row["Gain vs baseline, tuned"] == f"{mine['relative']:+.1%} (p {mine['p_corr']:.3f})"


def test_an_untuned_table_points_at_its_tuned_rows(monkeypatch):
    from bench.report.tables import tuning_lines

    monkeypatch.setattr(tuning, "tuned_provenance", lambda suite, profile: {
        "ml-100k/temporal_loo/sasrec/random": {"trials": 20}, "ml-100k/x/sasrec/icl": {"tuned": False}}
        if (suite, profile) == ("paradigms", "tuned") else {})
    (line,) = tuning_lines("paradigms")
    assert line.startswith("- tuning: none;") and "1 of its cells are tuned" in line
    assert "ml-100k/temporal_loo/sasrec/random" in line and "paradigms-tuned/tuned_vs_default.md" in line
    assert "tuned with" not in tuning_lines("warm")[0]
