"""Shared fixtures: tiny synthetic data sets built in memory (tests never download)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from bench.types import Dataset


def make_dataset(n_users: int = 30, n_items: int = 40, per_user: int = 12, seed: int = 0) -> Dataset:
    """Users with `per_user` distinct items each, popularity skewed, increasing timestamps."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1)
    weights /= weights.sum()
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False, p=weights)
        for t, i in enumerate(items):
            rows.append((str(u + 1), str(i + 1), float(rng.integers(1, 6)), float(1000 * u + t)))
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    ids = sorted(inter["item"].unique(), key=int)
    items = pd.DataFrame({"title": [f"Movie {i}" for i in ids]}, index=pd.Index(ids))
    text = pd.Series([f"Movie {i}" for i in ids], index=items.index)
    digest = hashlib.sha256(inter.to_csv().encode()).hexdigest()
    return Dataset("tiny", inter, items, text, digest, {"card": {"text_template": "{title}"}})


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_dataset()
