"""Name -> lazily imported target, plus a preset of settings. `list` and `--help` never import torch.

A method entry is a name, a target class and a preset (`llminit-var` = LLMInit with `selection: var`):
ablations and variants are entries, not subclasses. The entry's defaults are the class's settings with
its preset applied; run ids hash only what differs from them. An entry's family is the package (or
module) its target lives in under `methods/` (one tox env per family).

A registry with a `base` ("module:Class") checks each target when it is first resolved (a class target:
when it is registered): it must subclass the base, pass the base's `contract_problems()` and take its
entry's preset; otherwise a TypeError names the entry, the target and what is wrong or missing."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from bench.errors import UnknownChoiceError


class Registry:
    """Entries are 'module:attr' strings, resolved (and checked against `base`) on first use; duplicates are
    errors."""

    def __init__(self, kind: str, base: str | None = None):
        self.kind = kind
        self.base = base  # "module:Class" every target derives from (None: any object)
        self._targets: dict[str, str] = {}
        self._info: dict[str, str] = {}
        self._presets: dict[str, dict[str, Any]] = {}
        self._resolved: dict[str, Any] = {}

    def register(self, name: str, target: str | type, info: str = "",
                 preset: Mapping[str, Any] | None = None) -> None:
        """Add an entry. `target` is 'module:attr' (imported on first use), or a class (checked now)."""
        label = f"{target.__module__}:{target.__qualname__}" if isinstance(target, type) else target
        if name in self._targets:
            raise ValueError(f"{self.kind} {name!r} registered twice ({self._targets[name]} and {label})")
        if ":" not in label:
            raise ValueError(f"{self.kind} {name!r}: target must be 'module:attr', got {label!r}")
        preset = copy.deepcopy(dict(preset or {}))
        if isinstance(target, type):
            self._check(name, label, target, preset)
            self._resolved[name] = target
        self._targets[name] = label
        self._info[name] = info
        self._presets[name] = preset

    def target(self, name: str) -> str:
        self.check(name)
        return self._targets[name]

    def preset(self, name: str) -> dict[str, Any]:
        """The settings this entry fixes on its target class."""
        self.check(name)
        return copy.deepcopy(self._presets[name])

    def family(self, name: str) -> str:
        """The package (or module) under `methods/` that holds the entry's target: `methods.llminit.method`
        -> llminit, `methods.classic` -> classic."""
        module = self.target(name).split(":")[0].split(".")
        return module[1] if module[0] == "methods" and len(module) > 1 else module[0]

    def settings(self, name: str, values: Mapping[str, Any] | None = None):
        """The entry's settings: its class's Settings with the preset, then `values`, applied and validated
        (BenchError naming the entry, key, value and what is valid)."""
        from bench.settings import validate_settings

        cls = self.get(name)
        return validate_settings(cls.Settings, {**self._presets[name], **dict(values or {})}, f"{self.kind} {name!r}")

    def defaults(self, name: str) -> dict[str, Any]:
        """The entry's default settings (class defaults + preset), as JSON values."""
        return self.settings(name).model_dump(mode="json")

    def create(self, name: str, values: Mapping[str, Any] | None = None):
        """An instance of the entry: its class built with `settings(name, values)` and the entry's name."""
        return self.get(name)(self.settings(name, values), name=name)

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
            target = getattr(importlib.import_module(module), attr)
            self._check(name, self._targets[name], target, self._presets[name])
            self._resolved[name] = target
        return self._resolved[name]

    def _check(self, name: str, label: str, target: Any, preset: Mapping[str, Any]) -> None:
        """TypeError naming the entry, its target and what it lacks: not a subclass of `base`, the base's
        `contract_problems()`, or a preset key its settings do not have."""
        if self.base is None:
            return
        module, attr = self.base.split(":")
        base = getattr(importlib.import_module(module), attr)
        where = f"{self.kind} {name!r} ({label})"
        if not (isinstance(target, type) and issubclass(target, base)):
            raise TypeError(f"{where}: not a subclass of {self.base}")
        problems = list(target.contract_problems()) if hasattr(base, "contract_problems") else []
        fields = getattr(getattr(target, "Settings", None), "model_fields", {})
        problems += [f"preset key {key!r} is not a setting" for key in preset if key not in fields]
        if problems:
            raise TypeError(f"{where} breaks the {base.__name__} contract: {'; '.join(problems)}")

    def __contains__(self, name: str) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
