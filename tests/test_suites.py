"""Suite files: parts (extra sub-grids), shared run ids across suites, labels of swept method settings."""

import json

import pytest
import yaml

from bench.errors import BenchError
from bench.options import RunOptions
from bench.report.tables import method_labels
from bench.spec import expand, load_suite, suite_names


def _write(tmp_path, body: dict):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


BASE = {"name": "t", "datasets": ["ml-100k"], "splits": ["temporal_loo"], "backbones": ["lightgcn"],
        "methods": ["random", "llminit-var"], "seeds": [0], "encoder": "minilm",
        "backbone_settings": {"epochs": 2},
        "method_settings": {"llminit-var": {"variance_items": "all"}}}


def test_parts_add_their_own_subgrid(tmp_path):
    body = {**BASE, "parts": [{"splits": ["cold_users"], "backbones": ["sasrec"], "methods": ["random"]}]}
    specs = expand(load_suite(_write(tmp_path, body)))
    labels = sorted(s.label for s in specs)
    assert labels == ["ml-100k/cold_users/sasrec/random/seed0", "ml-100k/temporal_loo/lightgcn/llminit-var/seed0",
                      "ml-100k/temporal_loo/lightgcn/random/seed0"]
    part = [s for s in specs if s.backbone == "sasrec"][0]
    assert part.backbone_settings["epochs"] == 2  # inherited from the suite
    assert part.backbone_settings["max_len"] == 10  # sequential defaults resolved


def test_part_with_unknown_field_is_an_error(tmp_path):
    body = {**BASE, "parts": [{"splitz": ["cold_users"]}]}
    with pytest.raises(BenchError, match=r"parts\[0\].*splitz.*valid fields"):
        expand(load_suite(_write(tmp_path, body)))


def test_settings_may_name_what_only_a_part_runs_but_not_what_nothing_runs(tmp_path):
    body = {**BASE, "backbone_overrides": {"sasrec": {"train_targets_per_user": 5}},
            "parts": [{"splits": ["cold_users"], "backbones": ["sasrec"], "methods": ["random"]}]}
    specs = expand(load_suite(_write(tmp_path, body)))
    assert [s.backbone_settings["train_targets_per_user"] for s in specs if s.backbone == "sasrec"] == [5]
    body["backbone_overrides"] = {"gru4rec": {"epochs": 1}}
    with pytest.raises(BenchError, match="gru4rec.*neither the suite nor its parts"):
        expand(load_suite(_write(tmp_path, body)))


def test_a_profile_writes_its_tables_under_its_own_name():
    assert load_suite("coldstart").name == "coldstart"
    assert load_suite("coldstart", "paper").name == "coldstart-paper"
    # run ids come from the specs, not the suite name: runs shared with the default profile stay shared
    default = {s.run_id for s in expand(load_suite("coldstart"))}
    assert default <= {s.run_id for s in expand(load_suite("coldstart", "llm2rec"))}


def test_coldstart_default_fits_its_budget_and_profile_adds_llm2rec():
    default = expand(load_suite("coldstart"))
    full = expand(load_suite("coldstart", "llm2rec"))
    assert len(default) == 72 and not any(s.method == "llm2rec" for s in default)
    extra = [s for s in full if s.run_id not in {d.run_id for d in default}]
    assert {(s.split, s.backbone, s.method) for s in extra} == {("cold_users", "sasrec", "random"),
                                                                 ("cold_users", "sasrec", "llm2rec")}
    assert len(extra) == 6


@pytest.mark.parametrize("name", suite_names())
def test_every_suite_and_profile_expands(name):
    """Every builtin suite, under every profile, resolves to runs (names and settings all valid)."""
    for profile in [None, *load_suite(name).profiles]:
        assert expand(load_suite(name, profile)), (name, profile)


def test_transfer_suite_reuses_in_domain_runs_of_sequential_suite():
    sequential = {s.run_id for s in expand(load_suite("sequential"))}
    transfer = expand(load_suite("transfer"))
    shared = [s for s in transfer if s.run_id in sequential]
    assert len(transfer) == 12 and len(shared) == 6
    assert all(s.method_settings["train_dataset"] is None for s in shared)
    labels = method_labels(transfer)
    assert {labels[s.run_id] for s in transfer} == {"llm2rec [train_dataset=None]",
                                                   "llm2rec [train_dataset=ml-1m]"}
    # outside a sweep, labels stay the plain method name
    assert set(method_labels(expand(load_suite("smoke"))).values()) == {"random", "llminit-var"}


def test_runner_executes_pending_runs_seed_major(monkeypatch, tmp_path):
    """A partial suite covers every row with its first seed before any second seed starts."""
    from bench import executors as runner
    from bench.records import ResultStore

    specs = expand(load_suite("smoke"), None)
    specs = [s.model_copy(update={"seed": seed}) for seed in (2, 0, 1) for s in specs]
    order = []
    monkeypatch.setattr(runner, "prepare_shared", lambda *a, **k: None)
    monkeypatch.setattr(runner, "_execute_safely", lambda spec, *a: (order.append(spec.seed), (spec.run_id, None))[1])
    summary = runner.run_specs(specs, ResultStore(tmp_path), tmp_path, RunOptions(progress=False), workers=1)
    assert summary["done"] == len(specs) and order == sorted(order)


def test_a_run_that_succeeds_on_retry_drops_the_earlier_error(monkeypatch, tmp_path):
    from bench import executors as runner
    from bench.records import ResultStore

    spec = expand(load_suite("smoke"), None)[0]
    store = ResultStore(tmp_path)
    calls = []

    def execute(spec, store, *a):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first try fails")

    monkeypatch.setattr(runner, "execute", execute)
    run_id, error = runner._execute_safely(spec, str(tmp_path), str(tmp_path), "cpu", {})
    assert "first try fails" in error and (store.run_dir(run_id) / "error.txt").exists()
    assert runner._execute_safely(spec, str(tmp_path), str(tmp_path), "cpu", {}) == (run_id, None)
    assert not (store.run_dir(run_id) / "error.txt").exists()


def _profiles(name):
    return [None, *load_suite(name).profiles]


@pytest.mark.parametrize("name,profile", [(n, p) for n in suite_names() for p in _profiles(n)])
def test_every_ablation_differs_from_its_parent_in_exactly_its_own_settings(name, profile):
    """An ablation entry (a preset on a class that has a preset-free parent entry, e.g. pte-singlepass of pte)
    run beside its parent, in the same context, differs from it in exactly the settings its preset changes:
    a suite or profile value cannot override what defines the ablation, nor add another difference."""
    from bench.catalog import METHODS

    specs = expand(load_suite(name, profile))
    parents = {METHODS.target(m): m for m in METHODS.names() if not METHODS.preset(m)}
    context = lambda s: (s.dataset, s.split, json.dumps(s.split_settings, sort_keys=True), s.backbone,  # noqa: E731
                         json.dumps(s.backbone_settings, sort_keys=True), s.encoder, s.seed)
    by_context: dict = {}
    for spec in specs:
        by_context.setdefault((context(spec), spec.method), []).append(spec)
    compared = 0
    for spec in specs:
        parent = parents.get(METHODS.target(spec.method))
        preset = METHODS.preset(spec.method)
        if not preset or parent is None or (context(spec), parent) not in by_context:
            continue
        options = []
        for other in by_context[(context(spec), parent)]:
            diff = {k for k in spec.method_settings if spec.method_settings[k] != other.method_settings.get(k)}
            options.append(diff)
            own = {k for k, v in preset.items() if other.method_settings.get(k) != v}
            if diff == own and own:
                break
        else:
            raise AssertionError(f"{name} ({profile or 'default'}): {spec.method} differs from {parent} in "
                                 f"{sorted(min(options, key=len))}, its preset in {sorted(preset)}")
        compared += 1
    if name == "pte":
        assert compared >= 8 * 3  # its eight SASRec ablations x 3 seeds are checked, not skipped


def test_a_suite_value_overriding_an_ablation_preset_is_an_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndatasets: [ml-100k]\nsplits: [cold_users]\nbackbones: [sasrec]\n"
                    "methods: [pte, pte-singlepass]\nseeds: [0]\nencoder: minilm\n"
                    "method_settings:\n  pte-singlepass: {max_rounds: 3}\n")
    with pytest.raises(BenchError, match="'pte-singlepass': max_rounds=3 overrides the value its entry is defined by"):
        expand(load_suite(str(path)))
    # `--set` goes through the same check; a value equal to the preset is accepted
    with pytest.raises(BenchError, match="max_rounds=2 overrides"):
        expand(load_suite(str(path).replace("s.yaml", "s.yaml")), {"method": {"max_rounds": 2}})
    path.write_text(path.read_text().replace("max_rounds: 3", "max_rounds: 0"))
    assert {s.method_settings["max_rounds"] for s in expand(load_suite(str(path)))} == {0, 1}
