"""Name -> lazily imported target. `list` and `--help` never import torch."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from bench.errors import UnknownChoiceError


class Registry:
    """Entries are 'module:attr' strings, resolved on first use; duplicates are errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._targets: dict[str, str] = {}
        self._info: dict[str, str] = {}
        self._resolved: dict[str, Any] = {}

    def register(self, name: str, target: str, info: str = "") -> None:
        if name in self._targets:
            raise ValueError(f"{self.kind} {name!r} registered twice ({self._targets[name]} and {target})")
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target must be 'module:attr', got {target!r}")
        self._targets[name] = target
        self._info[name] = info

    def names(self) -> list[str]:
        return sorted(self._targets)

    def info(self, name: str) -> str:
        self.check(name)
        return self._info[name]

    def check(self, name: str) -> None:
        if name not in self._targets:
            raise UnknownChoiceError(self.kind, name, self._targets)

    def get(self, name: str) -> Any:
        self.check(name)
        if name not in self._resolved:
            module, attr = self._targets[name].split(":")
            self._resolved[name] = getattr(importlib.import_module(module), attr)
        return self._resolved[name]

    def __contains__(self, name: str) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
