"""Fixtures of the benchmarks (run with `-m benchmark --benchmark-enable`; see benchmarks/README.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bench_cache() -> Path:
    """The cache the LLM benchmarks read the converted SmolLM2 from and keep their prepared data in:
    `BENCH_CACHE`, default the project's datasets/cache (the model is converted there once)."""
    return Path(os.environ.get("BENCH_CACHE", "datasets/cache"))
