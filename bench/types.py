"""The small frozen objects that carry a run: Dataset, Split, FitContext, ParamCounts.

The method contract every paradigm implements is `bench.method.Method`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.options import RunOptions

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


@dataclass
class FitContext:
    """What a method gets to fit: data, split, seed, device, its run folder and shared services."""

    dataset: Dataset
    split: Split
    seed: int
    device: str
    run_dir: Path
    cache_dir: Path
    backbone: str | None = None
    backbone_config: dict[str, Any] = field(default_factory=dict)
    encoder: Any = None  # bench.encoders.Encoder or None
    # item text embeddings [n_items, dim] in Dataset.item_ids order, from the on-disk cache (lazy)
    embed_items: Callable[[], np.ndarray] | None = None
    options: RunOptions = field(default_factory=RunOptions)  # how to run (batch sizes, progress): not settings
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds, filled by the method
    extra: dict[str, Any] = field(default_factory=dict)  # method-reported facts recorded in the run
