"""Shared fixtures: tiny synthetic data sets built in memory (tests never download)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from bench.types import Dataset


def interaction_pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    """The (user, item) pairs of an interaction frame (leakage checks compare split parts by them)."""
    return set(zip(frame["user"], frame["item"]))


def _dataset(name: str, rows: list[tuple]) -> Dataset:
    """A Dataset from (user, item, rating, timestamp) rows; items titled "Movie <id>"."""
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    ids = sorted(inter["item"].unique(), key=int)
    items = pd.DataFrame({"title": [f"Movie {i}" for i in ids]}, index=pd.Index(ids))
    text = pd.Series([f"Movie {i}" for i in ids], index=items.index)
    digest = hashlib.sha256(inter.to_csv().encode()).hexdigest()
    return Dataset(name, inter, items, text, digest, {"card": {"text_template": "{title}"}})


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
    return _dataset("tiny", rows)


MONTH = 365.25 / 12 * 86400


def ctr_dataset(n_users: int = 24, n_items: int = 20, seed: int = 0) -> Dataset:
    """Ratings 1-5 over 8 months; every 4th user starts late (cold in the test window)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = rng.uniform(0, 3) * MONTH if u % 4 else 6.5 * MONTH
        for k, i in enumerate(rng.choice(n_items, size=16, replace=False)):
            step = (0.1 if u % 4 == 0 else 0.35) * MONTH
            rows.append((str(u + 1), str(i + 1), float(rng.integers(1, 6)), start + k * step))
    return _dataset("ctr-tiny", rows)


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_dataset()


class FitCall:
    """One fit as tests drive it: the TrainView and RunContext built from a data set and split, and the
    FitReport the method returned (`extra` / `timings` read it)."""

    def __init__(self, dataset: Dataset, split, **context):
        from bench.types import RunContext, TrainView

        self.data = TrainView.of(dataset, split)
        self.dataset, self.split = dataset, split  # the test's own handles (the method never gets these)
        self.ctx = RunContext(**context)
        self.report = None

    def __getattr__(self, name):  # seed, device, cache_dir, ...: the RunContext's
        return getattr(self.__dict__["ctx"], name)

    def run(self, method):
        self.report = method.fit(self.data, self.ctx)
        return self.report

    @property
    def extra(self) -> dict:
        return self.report.facts

    @property
    def timings(self) -> dict:
        return self.report.timings


def score(method, users, items=None) -> np.ndarray:
    """`method.score` of a ScoreQuery over `users` (and `items`; None: the catalogue)."""
    from bench.types import ScoreQuery

    return method.score(ScoreQuery.of(users, items))


def score_test_users(method, split, users=None) -> np.ndarray:
    """`method.score` of the split's test users (or `users`) with the held-out sequences the protocol gives
    them at inference (cold_users' context), as `bench.eval.ranking.evaluate_ranking` asks."""
    from bench.eval.ranking import query_for, test_user_histories

    users = np.sort(split.test["user"].unique()) if users is None else users
    return method.score(query_for(users, test_user_histories(split)))
