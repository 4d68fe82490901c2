"""DEVELOPERS.md's extension steps, followed in a temporary registry (the real catalogue, names file, snapshot
and tox.ini are never edited): a preset is one registry line, a display name and the defaults snapshot; a method
is a class in a new package, one registry line, a display name and a paradigm, the defaults snapshot and tox.ini;
the contract tests pick both up. Also: the registry refuses a target that is not a `bench.method.Method` or
breaks its contract, naming what is wrong."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

import bench.catalog
from bench.catalog import LLMINIT, METHODS
from bench.method import Method
from bench.registry import Registry
from bench.types import ParamCounts
from tests.contract import Artifacts, MethodContract, fit_twice

ROOT = Path(__file__).resolve().parents[1]

# what a new package methods/popularity/ holds: a popularity ranking that trains nothing
POPULARITY = '''
from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bench.backbones import CF_BACKBONES
from bench.method import Method
from bench.types import FitReport, ParamCounts, RunContext, ScoreQuery, TrainView


class PopularitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    smoothing: float = Field(0.0, ge=0)  # added to every item's training count


class Popularity(Method):
    """Every user gets the items ranked by their training count."""

    Settings: ClassVar[type[BaseModel]] = PopularitySettings
    backbones = CF_BACKBONES
    trains_nothing = True

    def fit(self, data: TrainView, ctx: RunContext) -> FitReport:
        report = self.start_fit(data)
        counts = data.train["item"].value_counts().reindex(data.item_ids).fillna(0).to_numpy()
        self.popularity = dict(zip(data.item_ids, counts + self.settings.smoothing))
        return report

    def score(self, query: ScoreQuery) -> np.ndarray:
        row = np.array([self.popularity.get(i, -np.inf) for i in self.query_items(query)], dtype=np.float32)
        return np.tile(row, (len(query.users), 1))

    def parameter_counts(self) -> ParamCounts:
        return ParamCounts(trainable=0)
'''


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registry(monkeypatch) -> Registry:
    """A copy of the catalogue, standing in for bench.catalog.METHODS (which the snapshot and tox.ini read)."""
    copy = Registry("method", base="bench.method:Method")
    for name in METHODS.names():
        copy.register(name, METHODS.target(name), METHODS.info(name), METHODS.preset(name))
    monkeypatch.setattr(bench.catalog, "METHODS", copy)
    monkeypatch.setattr(sys, "path", list(sys.path))  # scripts/tox_matrix.py adds the repository to it
    return copy


@pytest.fixture
def new_package(tmp_path, monkeypatch):
    """methods/popularity/ (an `__init__.py` and `method.py`), in a folder added to the `methods` package."""
    import methods

    folder = tmp_path / "extra" / "popularity"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text('"""Popularity: the most trained items first."""\n')
    (folder / "method.py").write_text(textwrap.dedent(POPULARITY))
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(folder.parent)])
    yield "methods.popularity.method:Popularity"
    for name in [n for n in sys.modules if n.startswith("methods.popularity")]:
        del sys.modules[name]


def _stale_snapshot_keys() -> set[str]:
    """The entries tests/test_identity.py's snapshot check reports as new ("run scripts/snapshot_defaults.py")."""
    from bench.identity import defaults_snapshot

    pinned = json.loads((ROOT / "tests" / "golden" / "settings_defaults.json").read_text())
    return set(defaults_snapshot()) - set(pinned)


def _regenerated_snapshot(tmp_path) -> dict:
    target = tmp_path / "settings_defaults.json"
    _script("snapshot_defaults").main(target)
    return json.loads(target.read_text())


@pytest.fixture
def names_file(tmp_path, monkeypatch):
    """`add(methods, paradigms)`: a copy of bench/report/names.yaml with display names and paradigm rows added,
    read in its place."""
    import yaml

    from bench.report import labels

    def add(methods: dict[str, str], paradigms: tuple[dict, ...] = ()) -> None:
        data = yaml.safe_load(labels.NAMES_FILE.read_text(encoding="utf-8"))
        data["methods"].update(methods)
        data["paradigms"] += list(paradigms)
        path = tmp_path / "names.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        monkeypatch.setattr(labels, "NAMES_FILE", path)
        labels.names.cache_clear()

    yield add
    labels.names.cache_clear()


def _unnamed(registry: Registry) -> set[str]:
    """The entries tests/test_names.py reports: without a display name, or of a paradigm names.yaml lacks."""
    from bench.report.labels import names, paradigm_of, paradigm_order

    return {n for n in registry.names() if n not in names()["methods"] or paradigm_of(n) not in paradigm_order()}


def _contract(registry: Registry, **attrs) -> type[MethodContract]:
    return type("Contract", (MethodContract,), {"registry": registry, **attrs})


def test_a_preset_is_one_registry_line_a_display_name_and_the_defaults_snapshot(registry, names_file, tmp_path):
    """Step 1: `M("llminit-var-max", LLMINIT, ..., {...})`, its display name in names.yaml; then
    scripts/snapshot_defaults.py. tox.ini and the contract tests need nothing (an entry of an existing family)."""
    tox = (ROOT / "tox.ini").read_text()
    assert _script("tox_matrix").render(tox) == tox and not _stale_snapshot_keys() and not _unnamed(registry)
    registry.register("llminit-var-max", LLMINIT, "LLMInit-var, max-pooled users",
                      {"selection": "var", "user_init": "max"})
    assert _unnamed(registry) == {"llminit-var-max"}  # test_names: "names.yaml methods lacks ..."
    names_file({"llminit-var-max": "LLMInit-var-max"})
    assert not _unnamed(registry)
    assert _stale_snapshot_keys() == {"method:llminit-var-max"}  # test_identity: "new entry, run ..."
    snapshot = _regenerated_snapshot(tmp_path)
    assert snapshot["method:llminit-var-max"]["defaults"]["user_init"] == "max"
    assert _script("tox_matrix").render(tox) == tox  # a new entry of a family does not make tox.ini stale
    cases = {case.name: case for case in _contract(registry).cases()}
    assert cases["llminit-var-max"].backbone == "mf"
    contract = _contract(registry)()
    contract.test_class_declarations(cases["llminit-var-max"])
    contract.test_unknown_setting_rejected(cases["llminit-var-max"])
    assert registry.create("llminit-var-max").settings.user_init == "max"


def test_a_method_is_a_package_a_registry_line_names_the_snapshot_and_tox_ini(registry, new_package, names_file,
                                                                              tmp_path):
    """Steps 2-4: a class in a new package `methods/popularity/`, one registry line, its display name and its
    family's paradigm in names.yaml; then scripts/snapshot_defaults.py and scripts/tox_matrix.py (a new family
    is a new tox env). The contract tests cover it without an edit, reading its capabilities (`trains_nothing`)
    off the class."""
    tox = (ROOT / "tox.ini").read_text()
    registry.register("popularity", new_package, "the most trained items first", {"smoothing": 1.0})
    assert registry.family("popularity") == "popularity"
    assert _unnamed(registry) == {"popularity"}
    names_file({"popularity": "Popularity"}, ({"name": "Popularity", "family": "popularity"},))
    assert not _unnamed(registry)
    assert _stale_snapshot_keys() == {"method:popularity"}
    assert _regenerated_snapshot(tmp_path)["method:popularity"] == {"version": 1, "defaults": {"smoothing": 1.0}}
    rendered = _script("tox_matrix").render(tox)
    assert rendered != tox and "[testenv:popularity]" in rendered  # tox.ini is stale until the script runs

    contract = _contract(registry, entries=("popularity",))
    (case,) = contract.cases()
    assert (case.name, case.backbone, case.protocol) == ("popularity", "mf", "ranking")
    assert "popularity" in {c.name for c in _contract(registry).cases()}
    fitted = fit_twice(case, Artifacts.build(tmp_path / "contract"), tmp_path / "fit")
    check = contract()
    check.test_class_declarations(case)
    check.test_unknown_setting_rejected(case)
    check.test_settings_round_trip_and_preset(fitted)
    check.test_scores_shape_finite_and_columns(fitted)
    check.test_evaluation_protocol(fitted)
    check.test_same_seed_same_scores(fitted)
    check.test_parameter_counts(fitted)  # trainable 0: the class says it trains nothing


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = 1


class _NotAMethod:
    Settings: ClassVar[type[BaseModel]] = _Settings


class _Incomplete(Method):  # no backbones, no fit / score / parameter_counts
    Settings: ClassVar[type[BaseModel]] = _Settings


class _Complete(Method):
    Settings: ClassVar[type[BaseModel]] = _Settings
    backbones = ("mf",)

    def fit(self, data, ctx):
        return self.start_fit(data)

    def score(self, query):
        raise NotImplementedError

    def parameter_counts(self):
        return ParamCounts(trainable=0)


@pytest.mark.parametrize(("target", "preset", "message"), [
    (_NotAMethod, {}, r"'bad' \(tests.test_extending:_NotAMethod\): not a subclass of bench.method:Method"),
    (_Incomplete, {}, r"breaks the Method contract: fit\(\) is not implemented; score\(\) is not implemented; "
                      r"parameter_counts\(\) is not implemented; backbones \(\)"),
    (_Complete, {"kk": 2}, r"breaks the Method contract: preset key 'kk' is not a setting"),
])
def test_registering_a_class_that_breaks_the_contract_names_what_is_wrong(target, preset, message):
    methods = Registry("method", base="bench.method:Method")
    with pytest.raises(TypeError, match=message):
        methods.register("bad", target, preset=preset)
    assert "bad" not in methods


def test_a_lazy_target_is_checked_when_first_resolved():
    methods = Registry("method", base="bench.method:Method")
    methods.register("fine", _Complete, preset={"k": 2})
    methods.register("bad", "tests.test_extending:_Incomplete")  # not imported yet: checked on first use
    assert methods.create("fine").settings.k == 2
    with pytest.raises(TypeError, match=r"method 'bad' \(tests.test_extending:_Incomplete\) breaks the Method "
                                        r"contract: fit\(\) is not implemented"):
        methods.get("bad")
