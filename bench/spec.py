"""RunSpec (one run, its id = hash of canonical JSON) and Suite (a grid of runs, read from a file).

Everything is validated up front: an unknown name or setting anywhere in a suite is an error before
any work starts, never a silently ignored value.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.errors import BenchError, UnknownChoiceError


class RunSpec(BaseModel):
    """One run, fully resolved (every default filled in), so its id pins down what was run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    dataset_settings: dict[str, Any] = Field(default_factory=dict)
    split: str
    split_settings: dict[str, Any] = Field(default_factory=dict)
    backbone: str
    backbone_settings: dict[str, Any] = Field(default_factory=dict)
    method: str
    method_settings: dict[str, Any] = Field(default_factory=dict)
    encoder: str | None = None
    encoder_settings: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"), default=str)

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.split}/{self.backbone}/{self.method}/seed{self.seed}"


class Suite(BaseModel):
    """A grid: datasets x splits x backbones x methods x seeds, with settings per layer."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    datasets: list[str]
    splits: list[str]
    backbones: list[str]
    methods: list[str]
    seeds: list[int] = [0, 1, 2]
    encoder: str | list[str] = "minilm"  # a list runs every encoder-using method once per encoder
    encoder_settings: dict[str, Any] = Field(default_factory=dict)
    dataset_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)  # dataset -> settings
    split_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)  # split -> settings
    backbone_settings: dict[str, Any] = Field(default_factory=dict)  # every backbone
    backbone_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)  # backbone -> settings
    method_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)  # method -> settings
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)  # profile -> suite fields to replace
    notes: str = ""


def suite_names() -> list[str]:
    return sorted(p.stem for p in resources.files("bench.suites").iterdir() if p.name.endswith(".yaml"))


def load_suite(name_or_path: str, profile: str | None = None) -> Suite:
    """A builtin suite by name or a YAML file by path, with a named profile applied."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text, source = path.read_text(), str(path)
    elif name_or_path in suite_names():
        res = resources.files("bench.suites") / f"{name_or_path}.yaml"
        text, source = res.read_text(), f"bench/suites/{name_or_path}.yaml"
    else:
        raise UnknownChoiceError("suite", name_or_path, suite_names())
    try:
        raw = yaml.safe_load(text)
        suite = Suite.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise BenchError(f"{source}: invalid suite file: {exc}") from exc
    if profile is not None:
        if profile not in suite.profiles:
            raise UnknownChoiceError(f"profile of suite {suite.name!r}", profile, suite.profiles)
        merged = {**suite.model_dump(), **suite.profiles[profile], "profiles": {}}
        try:
            suite = Suite.model_validate(merged)
        except ValidationError as exc:
            raise BenchError(f"{source}: profile {profile!r}: {exc}") from exc
    return suite


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`--set layer.key=value` (layer: dataset, split, backbone, method, encoder) -> {layer: {key: value}}."""
    layers = ("dataset", "split", "backbone", "method", "encoder")
    out: dict[str, dict[str, Any]] = {layer: {} for layer in layers}
    for pair in pairs:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise BenchError(f"--set {pair!r}: expected LAYER.KEY=VALUE with LAYER one of {', '.join(layers)}")
        key, value = pair.split("=", 1)
        layer, name = key.split(".", 1)
        if layer not in layers:
            raise UnknownChoiceError("--set layer", layer, layers)
        out[layer][name] = yaml.safe_load(value)
    return out


def expand(suite: Suite, overrides: dict[str, dict[str, Any]] | None = None) -> list[RunSpec]:
    """Every run of the suite, resolved and validated (unknown names/settings raise BenchError)."""
    from bench.backbones import resolve_backbone_config
    from bench.catalog import METHODS
    from bench.data import load_card
    from bench.encoders import ENCODER_NAMES
    from bench.splits import resolve_split_params

    overrides = overrides or {}
    encoders = [suite.encoder] if isinstance(suite.encoder, str) else list(suite.encoder)
    for encoder in encoders:
        if encoder not in ENCODER_NAMES:
            raise UnknownChoiceError("encoder", encoder, ENCODER_NAMES)
    for layer, names in (("split", suite.split_settings), ("backbone", suite.backbone_overrides),
                         ("method", suite.method_settings), ("dataset", suite.dataset_settings)):
        listed = {"split": suite.splits, "backbone": suite.backbones, "method": suite.methods,
                  "dataset": suite.datasets}[layer]
        for name in names:
            if name not in listed:
                raise BenchError(f"suite {suite.name!r}: settings given for {layer} {name!r}, which the "
                                 f"suite does not run; it runs: {', '.join(listed)}")
    specs = []
    for dataset in suite.datasets:
        dataset_settings = {**suite.dataset_settings.get(dataset, {}), **overrides.get("dataset", {})}
        card = load_card(dataset, dataset_settings)  # validates the name and the settings
        for split in suite.splits:
            split_params = resolve_split_params(split, {**suite.split_settings.get(split, {}),
                                                        **overrides.get("split", {})})
            for backbone in suite.backbones:
                backbone_config = resolve_backbone_config(backbone, {
                    **suite.backbone_settings, **suite.backbone_overrides.get(backbone, {}),
                    **overrides.get("backbone", {})})
                for method in suite.methods:
                    cls = METHODS.get(method)
                    raw = {**suite.method_settings.get(method, {}), **overrides.get("method", {})}
                    try:
                        settings = cls.Settings.model_validate(raw)
                    except ValidationError as exc:
                        raise BenchError(f"settings of method {method!r}: {exc}") from exc
                    uses_encoder = cls.needs_encoder
                    for encoder in encoders if uses_encoder else [None]:
                        for seed in suite.seeds:
                            specs.append(RunSpec(
                                dataset=dataset, dataset_settings=card.model_dump(mode="json"),
                                split=split, split_settings=split_params,
                                backbone=backbone, backbone_settings=backbone_config,
                                method=method, method_settings=settings.model_dump(mode="json"),
                                encoder=encoder,
                                encoder_settings={**suite.encoder_settings, **overrides.get("encoder", {})}
                                if uses_encoder else {},
                                seed=seed))
    unique = {spec.run_id: spec for spec in specs}
    return list(unique.values())
