"""The method contract: one base class every paradigm's method derives from.

A method class declares, at class level:
- `Settings`: a frozen pydantic model with `extra="forbid"` (its defaults; a registry entry adds a preset);
- `version`: bumped when a default or what the method computes changes (part of run ids);
- `backbones`: the backbone names it runs on (checked when a suite expands, never inside `fit`);
- `protocol`: "ranking" (scores the catalogue) or "pointwise" (Yes/No probabilities of labelled pairs);
- `needs_item_text`: whether it reads item text (titles in prompts, text embeddings, profiles): such a method
  refuses a data set without item text before any work (`bench.data.own.check_item_text`, run by
  `bench.runner.preflight`); the others run on placeholder text "item <id>";
- `needs_encoder`: whether the run's text encoder is built for it; `resources`: what one run asks a Ray
  cluster for beyond CPUs (e.g. {"num_gpus": 1}), asked for only where the cluster has it;
- `trains_nothing`: it has no trainable parameter (the untuned LLM), so `parameter_counts().trainable` is 0;
- `item_cold_start`: how it scores an item without training interactions (`COLD_ITEM_SOURCES`); where a
  setting or the backbone changes that, `cold_item_source` says so per instance (recorded in every ranking
  run's `evaluation.item_cold_start`).
These are also the capabilities the contract tests read (tests/contract.py). `bench.registry` checks a class
(`contract_problems`) when its entry is first resolved: a class that breaks the contract is never run.
The constructor is this one: settings (validated, preset applied: `bench.catalog.METHODS.create`) and the
registry entry's name. Instances implement:
- `fit(data: TrainView, ctx: RunContext) -> FitReport`: `data` holds the catalogue, train and valid, never
  test (model selection on valid only); `ctx` says how to run (seed, device, folders, encoder, options);
- `score(query: ScoreQuery) -> np.ndarray`: [len(query.users), len(items)] scores, items = the catalogue
  when `query.items` is None; a pointwise protocol passes each pair's history in the query;
- `parameter_counts()`.
Pre-flight (before any run of a suite starts, once per distinct setting; a problem is a one-line BenchError):
- `check_inputs(cache_dir, build)`: checks of the settings against files, nothing trained (the default: every
  path setting exists and holds no dangling link, and one naming a model, `MODEL_PATH_SETTINGS`, is a model
  folder; the LLM methods add their prompt templates, answer tokens and the model's context);
- `check_data(data, cache_dir)`: checks that also read the prepared data set and split (prompt lengths).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from bench.backbones import BACKBONES
from bench.types import FitReport, ParamCounts, RunContext, ScoreQuery, TrainView

ColdItemSource = Literal["text", "text-init", "id"]
# how a method scores an item with no training interaction (cold). Every trained table also meets such an
# item as a sampled or softmax negative, so "never a positive" is the exact claim, not "never updated".
COLD_ITEM_SOURCES: dict[str, str] = {
    "text": "from its text, through the same trained map as every item (frozen text embedding + adapter, or "
            "the text in the prompt)",
    "text-init": "from its text-derived initial row, which no positive interaction ever trains",
    "id": "ID table: from its random initial row, which no positive interaction ever trains (its scores are "
          "what the initialisation gives)",
}


# path settings that name a model folder (a transformers / sentence-transformers folder: config.json or
# modules.json), unless they hold a builtin keyword such as "smollm2"
MODEL_PATH_SETTINGS = ("base_model", "generator")


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Method:
    """Base of every method class (see the module docstring for the contract)."""

    Settings: ClassVar[type[BaseModel]] = NoSettings
    version: ClassVar[int] = 1
    backbones: ClassVar[tuple[str, ...]] = ()
    protocol: ClassVar[Literal["ranking", "pointwise"]] = "ranking"
    needs_encoder: ClassVar[bool] = False
    needs_item_text: ClassVar[bool] = False  # reads item text: refused up front on a data set without any
    trains_nothing: ClassVar[bool] = False  # no trainable parameter (parameter_counts().trainable == 0)
    resources: ClassVar[Mapping[str, float]] = {}
    item_cold_start: ClassVar[ColdItemSource] = "id"  # COLD_ITEM_SOURCES; a text-based item table overrides it
    default_name: ClassVar[str] = ""  # the entry name when constructed without one (tests, benchmarks)

    def __init__(self, settings: BaseModel | None = None, name: str | None = None):
        if settings is not None and not isinstance(settings, self.Settings):
            raise TypeError(f"{type(self).__name__} takes {self.Settings.__name__}, got {type(settings).__name__}")
        self.settings = settings if settings is not None else self.Settings()
        self.name = name or self.default_name or type(self).__name__.lower()

    def fit(self, data: TrainView, ctx: RunContext) -> FitReport:
        """Train on `data.train` (model selection on `data.valid` only); return what happened."""
        raise NotImplementedError

    def score(self, query: ScoreQuery) -> np.ndarray:
        """Scores [len(query.users), len(query.items)]; items None: the catalogue in `data.item_ids` order."""
        raise NotImplementedError

    def start_fit(self, data: TrainView) -> FitReport:
        """Keep the training view for the method's own helpers and open this fit's report."""
        self.data, self.report = data, FitReport()
        return self.report

    def query_items(self, query: ScoreQuery) -> np.ndarray:
        """The query's columns: its items, or the whole catalogue."""
        return self.data.item_ids if query.items is None else np.asarray(query.items)

    def parameter_counts(self) -> ParamCounts:
        raise NotImplementedError

    def test_user_sample(self) -> int:
        """How many test users the engine scores: a seeded sample of the split's test users (the same users for
        every method asking the same size on the same split, recorded in the record's evaluation); 0 = all.
        Only a method whose scoring is too costly for every user on a CPU (an LLM reranker) asks for less."""
        return 0

    def check_inputs(self, cache_dir: Path, build: bool = False) -> None:
        """Pre-flight, before any run starts: BenchError (one line) for a setting that cannot work. The default
        checks every path setting (`bench.settings.path_field`): it exists, holds no dangling symbolic link, and
        one of `MODEL_PATH_SETTINGS` is a model folder. `build` False: build nothing (a check that needs a
        builtin asset converted first may wait for the call with `build` True, after the shared preparation)."""
        from bench.data.cards import CARD_NAMES
        from bench.identity import KEYWORDS, check_path_setting
        from bench.settings import path_keys

        for loc in path_keys(type(self.settings)):
            value: Any = self.settings
            for part in loc:
                value = getattr(value, part, None)
            if not isinstance(value, str) or value in KEYWORDS or value in CARD_NAMES:
                continue
            check_path_setting(value, f"method {self.name!r} setting {'.'.join(loc)}",
                               model=loc[-1] in MODEL_PATH_SETTINGS)

    def check_data(self, data: TrainView, cache_dir: Path) -> None:
        """Pre-flight with the prepared data set and split (after the shared preparation, before any run): a
        method overrides it for checks that read the data (the longest prompt against the model's context)."""

    @classmethod
    def training_components(cls, record: dict) -> list:
        """The trained components of one of this class's runs, from its record, and whether each stopped at its cap
        (`bench.components.Component`; the convergence marks of every table). By default the run's own model; a
        family with more trained parts (a CF encoder, LLM stages, a retrieval stage) adds them."""
        from bench.components import model_training

        return model_training(record)

    @classmethod
    def recorded_offline_cost(cls, record: dict) -> tuple[float, float]:
        """(tokens, seconds) one of this class's runs spent building its LLM stages offline, the first time they
        were built (a cached stage reports what building it cost), from its record; NaN where no LLM ran. By default
        an `offline_cost` ({tokens, seconds}) among the record's method facts (a Yes / No model's LoRA training)."""
        info = record.get("method_info") or {}
        for value in (info, *info.values()):
            if isinstance(value, dict) and isinstance(value.get("offline_cost"), dict):
                cost = value["offline_cost"]
                return float(cost.get("tokens", math.nan)), float(cost.get("seconds", math.nan))
        return math.nan, math.nan

    def cold_item_source(self, backbone: str | None = None) -> ColdItemSource:
        """How this instance scores an item without training interactions (a key of COLD_ITEM_SOURCES): the
        class's `item_cold_start`, unless a setting or the `backbone` (None: the one it was fitted on, where
        known) changes it."""
        return self.item_cold_start

    @classmethod
    def seed_shared(cls, settings: BaseModel) -> str | None:
        """What of the method is trained once and shared by every run seed (its own seed a setting, so a cache
        serves all seeds), in words with that seed, e.g. "LLM stages CSFT (seed 0)"; None: the run seed trains
        everything. Table notes name it: an interval over seeds leaves that part's training variance out."""
        return None

    @classmethod
    def contract_problems(cls) -> list[str]:
        """What of the class-level contract a class gets wrong or lacks, in words (empty: nothing)."""
        problems = [f"{name}() is not implemented" for name in ("fit", "score", "parameter_counts")
                    if getattr(cls, name) is getattr(Method, name)]
        if not (isinstance(cls.Settings, type) and issubclass(cls.Settings, BaseModel)):
            problems.append("Settings is not a pydantic model")
        else:
            config: dict[str, Any] = dict(cls.Settings.model_config)
            if config.get("extra") != "forbid" or not config.get("frozen"):
                problems.append("Settings must be frozen with extra='forbid'")
        if not isinstance(cls.version, int) or isinstance(cls.version, bool) or cls.version < 1:
            problems.append("version must be an int >= 1")
        unknown = [b for b in cls.backbones if b not in BACKBONES]
        if not cls.backbones or unknown:
            problems.append(f"backbones {tuple(cls.backbones)!r}: the names of the backbones it runs on are needed "
                            f"(known: {', '.join(BACKBONES)})")
        elif cls.protocol == "pointwise" and tuple(cls.backbones) != ("none",):
            problems.append("a pointwise method runs on backbone 'none' only (it trains its own models)")
        problems += [f"{flag} must be a bool" for flag in ("needs_encoder", "needs_item_text", "trains_nothing")
                     if not isinstance(getattr(cls, flag), bool)]
        if not isinstance(cls.resources, Mapping):
            problems.append("resources must be a mapping")
        if cls.protocol not in ("ranking", "pointwise"):
            problems.append(f"protocol {cls.protocol!r} (valid: ranking, pointwise)")
        if cls.item_cold_start not in COLD_ITEM_SOURCES:
            problems.append(f"item_cold_start {cls.item_cold_start!r} (valid: {', '.join(COLD_ITEM_SOURCES)})")
        return problems
