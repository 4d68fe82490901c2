"""The small objects that carry a run: Dataset and Split (the engine's), and what a method sees of them:
TrainView (catalogue + train + valid), RunContext, ScoreQuery, FitReport, ParamCounts.

The method contract every paradigm implements is `bench.method.Method`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.options import RunOptions
from bench.progress import NO_PROGRESS, RunProgress

if TYPE_CHECKING:
    from bench.backbones import CommonSettings

INTER_COLUMNS = ("user", "item", "rating", "timestamp")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A prepared data set: filtered interactions (string ids), item fields and item text."""

    name: str
    interactions: pd.DataFrame  # columns INTER_COLUMNS; user and item are str
    items: pd.DataFrame  # index: item id (str); metadata columns (title, year, genres, ...)
    item_text: pd.Series  # item id -> text rendered from the card's template
    content_hash: str
    meta: dict[str, Any] = field(default_factory=dict)  # source, filters, counts, missing-text report

    @property
    def item_ids(self) -> np.ndarray:
        """The catalogue, in a fixed order: every score matrix uses these columns."""
        return self.items.index.to_numpy()

    @property
    def user_ids(self) -> np.ndarray:
        return np.sort(self.interactions["user"].unique())


@dataclass(frozen=True, eq=False)
class Split:
    """Train / valid / test interactions plus segment labels, identical for every method."""

    name: str
    params: dict[str, Any]
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    user_segment: pd.Series  # test/valid user -> "warm" | "cold" (by training count)
    item_segment: pd.Series  # item -> "head" | "tail" (by training popularity)
    content_hash: str
    dataset_hash: str
    description: str = ""
    path: Path | None = None
    # interactions of held-out users known at inference only (cold_users: each one's earlier sequence),
    # column `part` = valid / test; empty for splits whose evaluated users are in training
    context: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[*INTER_COLUMNS, "part"]))
    # all training pairs of the split's window, before a few-shot sample took `train` from them (ctr_temporal
    # with shots > 0); None where `train` holds all of them. Few-shot limits only what an LLM is tuned on
    train_all: pd.DataFrame | None = None


@dataclass(frozen=True)
class ParamCounts:
    """Parameters a method trains, and frozen ones it needs (online: at inference; offline: to prepare)."""

    trainable: int
    frozen_online: int = 0
    frozen_offline: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "trainable": int(self.trainable),
            "frozen_online": int(self.frozen_online),
            "frozen_offline": int(self.frozen_offline),
        }


@dataclass(frozen=True, eq=False)
class Catalogue:
    """What a method may know of the data set: its items (fields, text) and user ids, no interactions."""

    name: str
    items: pd.DataFrame  # index: item id (str); metadata columns
    item_text: pd.Series  # item id -> text rendered from the card's template
    user_ids: np.ndarray  # every user of the data set, sorted (who exists, not who is tested)
    content_hash: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def item_ids(self) -> np.ndarray:
        """The catalogue, in `Dataset.item_ids` order: every score matrix uses these columns."""
        return self.items.index.to_numpy()


@dataclass(frozen=True, eq=False)
class TrainSplit:
    """A split without its test part: train and valid interactions, its settings, its item segments."""

    name: str
    params: dict[str, Any]
    train: pd.DataFrame
    valid: pd.DataFrame
    item_segment: pd.Series  # item -> "head" | "tail" (by training popularity)
    content_hash: str
    description: str = ""
    # held-out validation users' earlier interactions (cold_users), known at inference only: never the test
    # users' (they come with the ScoreQuery)
    valid_context: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(INTER_COLUMNS)))
    # all training pairs (ctr_temporal with shots > 0: before the few-shot sample; None: `train` is all of them).
    # Few-shot limits only what an LLM is tuned on; a CF model (CoLLM's encoder) pre-trains on all of them
    train_all: pd.DataFrame | None = None


@dataclass(frozen=True, eq=False)
class TrainView:
    """Everything `Method.fit` receives of the data: the catalogue, train and valid (and, for a few-shot split,
    all training pairs: `train_all`). Never test."""

    catalogue: Catalogue
    split: TrainSplit

    @classmethod
    def of(cls, dataset: Dataset, split: Split) -> TrainView:
        """The view of a prepared data set and split that a method may train on."""
        catalogue = Catalogue(name=dataset.name, items=dataset.items, item_text=dataset.item_text,
                              user_ids=dataset.user_ids, content_hash=dataset.content_hash, meta=dataset.meta)
        part = TrainSplit(name=split.name, params=split.params, train=split.train, valid=split.valid,
                          item_segment=split.item_segment, content_hash=split.content_hash,
                          description=split.description,
                          valid_context=split.context[split.context["part"] == "valid"][list(INTER_COLUMNS)],
                          train_all=split.train_all)
        return cls(catalogue, part)

    @property
    def train(self) -> pd.DataFrame:
        """The training pairs a method is tuned on (a few-shot split: the N sampled pairs)."""
        return self.split.train

    @property
    def train_all(self) -> pd.DataFrame:
        """All training pairs of the split (a few-shot split: those the sample was drawn from; else `train`).
        Few-shot limits only what an LLM is tuned on: a pre-trained CF model may learn from all of them."""
        return self.split.train if self.split.train_all is None else self.split.train_all

    @property
    def valid(self) -> pd.DataFrame:
        return self.split.valid

    @property
    def item_ids(self) -> np.ndarray:
        return self.catalogue.item_ids

    @property
    def user_ids(self) -> np.ndarray:
        return self.catalogue.user_ids


@dataclass(frozen=True, eq=False)
class ScoreQuery:
    """What `Method.score` is asked: rows `users`, columns `items` (None: the whole catalogue in
    `Catalogue.item_ids` order), and the held-out histories the protocol provides, if any.

    `pair_histories[(user, item)]`: the history (item ids, oldest first) a pointwise protocol scores that pair
    with; a pair it does not name is scored with the user's history from train + valid.
    `user_histories[user]`: a held-out user's earlier sequence (item ids, oldest first), given at inference
    only (cold_users); a user it does not name is scored from what the method learnt of it."""

    users: np.ndarray
    items: np.ndarray | None = None
    pair_histories: Mapping[tuple[Any, Any], tuple] = field(default_factory=dict)
    user_histories: Mapping[Any, tuple] = field(default_factory=dict)

    @classmethod
    def of(cls, users, items=None, pair_histories: Mapping | None = None,
           user_histories: Mapping | None = None) -> ScoreQuery:
        return cls(np.asarray(users), None if items is None else np.asarray(items), dict(pair_histories or {}),
                   dict(user_histories or {}))


@dataclass
class FitReport:
    """What `Method.fit` returns: stage timings, facts the record keeps (`method_info`), the validation
    curve of its main training, and whether that training stopped early on validation."""

    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    facts: dict[str, Any] = field(default_factory=dict)  # method-reported facts recorded in the run
    curve: list[dict[str, Any]] = field(default_factory=list)  # per evaluation: epoch / step, valid metric
    converged: bool | None = None  # True: stopped early on validation; False: hit the cap; None: no selection

    def training(self, info: dict[str, Any]) -> None:
        """Take a backbone's training summary (`early_stopped`, `curve`, `train_seconds`) into the report."""
        self.facts["training"] = info
        self.timings["train"] = info.get("train_seconds", 0.0)
        if "early_stopped" in info:
            self.converged = bool(info["early_stopped"])
        if info.get("curve"):
            self.curve = list(info["curve"])

    def as_dict(self) -> dict[str, Any]:
        return {"converged": self.converged, "curve": self.curve}


@dataclass
class RunContext:
    """How a method runs (never what it learns from): seed, the run's device, its run folder, its backbone and
    that backbone's typed settings, shared services."""

    seed: int
    device: str  # the run's one device, resolved once (bench.options.resolve_device); `options.device` agrees
    run_dir: Path
    cache_dir: Path
    backbone: str | None = None  # the backbone's name (bench.backbones.BACKBONES)
    # its settings, validated (bench.backbones.backbone_settings); None: the default settings of `backbone`
    backbone_settings: CommonSettings | None = None
    encoder: Any = None  # bench.encoders.Encoder or None
    # item text embeddings [n_items, dim] in Catalogue.item_ids order, from the on-disk cache (lazy)
    embed_items: Callable[[], np.ndarray] | None = None
    options: RunOptions = field(default_factory=RunOptions)  # how to run (batch sizes, progress): not settings
    # where a method reports its epochs / steps / generations for the console (bench.progress); a no-op by default
    progress: RunProgress = NO_PROGRESS

    def __post_init__(self):
        if self.backbone is not None and self.backbone_settings is None:
            from bench.backbones import backbone_settings

            self.backbone_settings = backbone_settings(self.backbone)
        if self.options.device != self.device:  # one device: the options say the one the run uses
            self.options = self.options.model_copy(update={"device": self.device})
