"""RunSpec (one run, its id = hash of canonical JSON) and Suite (a grid of runs, read from a file).

Everything is validated up front: an unknown name or setting anywhere in a suite is an error before
any work starts, never a silently ignored value.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.errors import BenchError, UnknownChoiceError
from bench.hashing import json_hash

# a suite's name (and a profile's) is a folder name under --results: letters, digits, '_', '.', '-', never a path
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_SEEDS = 1000  # seeds per cell (--seeds, --extra-seeds, a suite's seeds): more is a typo, never a study
SEED_LIMIT = 2**32 - 1  # numpy's and torch's seeds
# a YAML number without a dot or a signed exponent ('1e8', '1.5e8') reads as text; on the command line it is a number
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


class RunSpec(BaseModel):
    """One run, fully resolved (every default filled in). Its id hashes only what identifies the result:
    names, seed, layer versions and the settings that differ from their defaults (bench.identity)."""

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
    def identity(self) -> dict[str, Any]:
        """What the run id hashes: names, seed, layer versions, non-default settings (bench.identity).
        Computed on each call (not cached on the instance: `model_copy` would carry a stale one over)."""
        from bench.identity import identity

        return identity(self)

    @property
    def run_id(self) -> str:
        return json_hash(self.identity, 16)

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.split}/{self.backbone}/{self.method}/seed{self.seed}"


class GridAxis(BaseModel):
    """One swept setting: its values, the methods it applies to, and values a method skips."""

    model_config = ConfigDict(extra="forbid")

    values: list[Any]
    methods: list[str] | None = None  # default: every method of the suite
    skip: dict[str, list[Any]] = Field(default_factory=dict)  # method -> values it does not run


class Suite(BaseModel):
    """A grid: datasets x splits x backbones x methods x seeds, with settings per layer."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    datasets: list[str]
    splits: list[str]
    backbones: list[str]
    methods: list[str]
    baseline: str = "random"  # the row every other method is compared with (gain, significance)
    seeds: list[int] = [0, 1, 2]
    encoder: str | list[str] = "minilm"  # a list runs every encoder-using method once per encoder
    encoder_settings: dict[str, Any] = Field(default_factory=dict)
    dataset_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)  # dataset -> settings
    split_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)  # split -> settings
    backbone_settings: dict[str, Any] = Field(default_factory=dict)  # every backbone
    backbone_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)  # backbone -> settings
    method_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)  # method -> settings
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)  # profile -> suite fields to replace
    # "LAYER.KEY" -> values (or a GridAxis): one run per value, e.g. backbone.embedding_size: [32, 64]
    grid: dict[str, list[Any] | GridAxis] = Field(default_factory=dict)
    # extra sub-grids run with the suite, each a partial suite (e.g. other splits / backbones / methods);
    # unspecified fields come from the suite, settings for names the part does not run are dropped
    parts: list[dict[str, Any]] = Field(default_factory=list)
    # run options (bench.options.RunOptions) this suite runs with unless the command line says otherwise;
    # they never enter run ids
    options: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""
    reference: str = ""  # published values quoted under the tables as context, never as rows
    # "paradigms": the main table is one row per paradigm with a column group per split plus cost columns
    # (bench.report.paradigms); "grid": rows (backbone, method), a column group per dataset / split
    table: Literal["grid", "paradigms"] = "grid"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError("a suite name is a folder name: letters, digits, '_', '.', '-', starting with a letter "
                             "or digit (no '/', no '..')")
        return value

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not NAME_PATTERN.match(str(name)):
                raise ValueError(f"profile name {name!r} is not a folder name: letters, digits, '_', '.', '-'")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("at least one seed is needed")
        if len(value) > MAX_SEEDS:
            raise ValueError(f"{len(value)} seeds; at most {MAX_SEEDS}")
        bad = [seed for seed in value if isinstance(seed, bool) or not 0 <= seed <= SEED_LIMIT]
        if bad:
            raise ValueError(f"seed {bad[0]!r} is not an integer in 0..{SEED_LIMIT}")
        return value


def _one_line(exc: ValidationError) -> str:
    """A pydantic error as one line: the first problem (field and message), and how many more there are."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(map(str, first["loc"])) or "(file)"
    text = f"{where}: {first['msg'].removeprefix('Value error, ')}"
    if first["type"] != "missing" and "input" in first and not isinstance(first["input"], dict):
        text += f" (got {first['input']!r})"
    if len(errors) > 1:
        text += f"; and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''}"
    return " ".join(text.split())


def suite_names() -> list[str]:
    return sorted(p.stem for p in resources.files("bench.suites").iterdir() if p.name.endswith(".yaml"))


def _check_preset_holds(suite: str, method: str, values: dict[str, Any]) -> None:
    """A value for a setting that the method's entry presets (what makes `pte-singlepass` single-pass) must
    equal the preset: a suite, profile or `--set` value that overrode it would run the parent under the
    ablation's name."""
    from bench.catalog import METHODS

    preset = METHODS.preset(method)
    clash = {k: v for k, v in values.items() if k in preset and v != preset[k]}
    if clash:
        key, value = next(iter(clash.items()))
        raise BenchError(f"suite {suite!r}: method {method!r}: {key}={value!r} overrides the value its entry is "
                         f"defined by ({key}={preset[key]!r}); drop the key for {method!r} (suite file or "
                         f"--set), or leave {method!r} out with --method")


TUNED_FOLDER = "tuned"  # bench/suites/tuned/<suite>.yaml: the profiles `bench tune --write-profile` writes


def tuned_profiles_path(name_or_path: str) -> Path:
    """Where the tuned profiles of a suite live: bench/suites/tuned/<name>.yaml for a builtin suite,
    <folder>/tuned/<file name> beside a suite file (bench.tuning writes them; load_suite reads them)."""
    if name_or_path in suite_names():
        return Path(str(resources.files("bench.suites"))) / TUNED_FOLDER / f"{name_or_path}.yaml"
    path = Path(name_or_path)
    return path.parent / TUNED_FOLDER / path.name


def _with_tuned_profiles(raw: dict[str, Any], name_or_path: str, source: str) -> dict[str, Any]:
    """The suite's fields with the profiles of its tuned-profiles file added (`tuned_profiles_path`), if any."""
    path = tuned_profiles_path(name_or_path)
    if not path.is_file():
        return raw
    try:
        tuned = yaml.safe_load(read_text_file(path, "tuned profiles file"))
    except yaml.YAMLError as exc:
        raise BenchError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    profiles = tuned.get("profiles") if isinstance(tuned, dict) else None
    if not isinstance(profiles, dict):
        raise BenchError(f"{path}: expected a mapping with `profiles` (written by bench tune --write-profile)")
    own = raw.get("profiles") or {}
    clash = sorted(set(own) & set(profiles))
    if clash:
        raise BenchError(f"{path}: profile {clash[0]!r} is also defined in {source}; rename one of them")
    return {**raw, "profiles": {**own, **profiles}}


def load_suite(name_or_path: str, profile: str | None = None) -> Suite:
    """A builtin suite by name or a YAML file by path, with a named profile applied (its own profiles and those
    of its tuned-profiles file, `tuned_profiles_path`)."""
    path = Path(name_or_path)
    if name_or_path not in suite_names() and (path.suffix in (".yaml", ".yml") or "/" in name_or_path
                                              or os.sep in name_or_path):
        if not path.is_file():
            raise BenchError(f"no such suite file: {path}" + (f" (builtin suites: {', '.join(suite_names())})"
                                                              if path.suffix in (".yaml", ".yml") else ""))
        source = str(path)
        text = read_text_file(path, "suite file")
    elif name_or_path in suite_names():
        res = resources.files("bench.suites") / f"{name_or_path}.yaml"
        text, source = res.read_text(), f"bench/suites/{name_or_path}.yaml"
    else:
        raise UnknownChoiceError("suite", name_or_path, suite_names())
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BenchError(f"{source}: invalid suite file: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise BenchError(f"{source}: invalid suite file: expected a mapping of suite fields, got "
                         f"{type(raw).__name__}")
    raw = _with_tuned_profiles(raw, name_or_path, source)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        raise BenchError(f"{source}: invalid suite file: {_one_line(exc)}") from None
    if profile is not None:
        if profile not in suite.profiles:
            raise UnknownChoiceError(f"profile of suite {suite.name!r}", profile, suite.profiles)
        # a profile's tables go to results/<suite>-<profile>/, never over the default profile's
        merged = {**suite.model_dump(), "name": f"{suite.name}-{profile}", **suite.profiles[profile],
                  "profiles": {}}
        try:
            suite = Suite.model_validate(merged)
        except ValidationError as exc:
            raise BenchError(f"{source}: profile {profile!r}: {_one_line(exc)}") from None
    return suite


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file; BenchError naming the file, the line and the byte when it is not UTF-8."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise BenchError(f"{path}, line {line}, column {column}: {what} is not UTF-8 text (byte "
                         f"0x{data[exc.start]:02x})") from None


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
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str) and _NUMBER.match(parsed.strip()):
            parsed = float(parsed)
        out[layer][name] = parsed
    return out


ADHOC_PROFILES = "adhoc.yaml"  # bench/profiles/: the profiles of runs given on the command line
ADHOC_DEFAULT_PROFILE = "cpu"


def adhoc_profiles() -> dict[str, dict[str, Any]]:
    """The ad-hoc profiles (bench/profiles/adhoc.yaml): name -> summary, backbone_overrides, method_settings_from."""
    text = (resources.files("bench.profiles") / ADHOC_PROFILES).read_text()
    return yaml.safe_load(text)["profiles"]


def adhoc_suite(dataset: str, split: str, backbone: str, methods: list[str], seeds: int, encoder: str,
                profile: str | None = None) -> Suite:
    """The suite of runs given on the command line, with the settings of an ad-hoc profile (default `cpu`: what
    the suites run, so a suite's cell run ad hoc has the suite's run id): each backbone's caps, and each method's
    settings from the first suite of the profile's `method_settings_from` that sets them. The profile's name is
    the suite's `profile` (recorded in each run's `requested`)."""
    profiles = adhoc_profiles()
    name = profile or ADHOC_DEFAULT_PROFILE
    if name not in profiles:
        raise UnknownChoiceError("profile of ad-hoc runs (no --suite)", name, profiles)
    chosen = profiles[name]
    method_settings: dict[str, dict[str, Any]] = {}
    for source in chosen.get("method_settings_from") or []:
        for method, values in load_suite(source).method_settings.items():
            if method in methods:
                method_settings.setdefault(method, values)
    overrides = chosen.get("backbone_overrides") or {}
    return Suite(name="adhoc", description=f"runs given on the command line; profile {name}: {chosen['summary']}",
                 datasets=[dataset], splits=[split], backbones=[backbone], methods=methods,
                 seeds=list(range(seeds)), encoder=encoder, method_settings=method_settings,
                 backbone_overrides={backbone: overrides[backbone]} if backbone in overrides else {})


def _grid_points(suite: Suite) -> list[tuple[list[str], dict[str, dict[str, Any]]]]:
    """(methods, {layer: {key: value}}) per point of the suite's grid; methods an axis does not cover
    keep the suite's value for that setting (duplicates collapse on run id)."""
    import itertools

    layers = ("dataset", "split", "backbone", "method", "encoder")
    axes = {}
    for key, axis in suite.grid.items():
        axis = axis if isinstance(axis, GridAxis) else GridAxis(values=axis)
        if "." not in key or key.split(".", 1)[0] not in layers:
            raise BenchError(f"suite {suite.name!r}: grid key {key!r} must be LAYER.KEY with LAYER one of "
                             f"{', '.join(layers)}")
        for method in [*(axis.methods or []), *axis.skip]:
            if method not in suite.methods:
                raise BenchError(f"suite {suite.name!r}: grid {key!r} names method {method!r}, which the suite "
                                 f"does not run; it runs: {', '.join(suite.methods)}")
        axes[key] = axis
    points = []
    for values in itertools.product(*(a.values for a in axes.values())):
        by_overrides: dict[str, tuple[list[str], dict]] = {}
        for method in suite.methods:
            point: dict[str, dict[str, Any]] = {}
            skipped = False
            for (key, axis), value in zip(axes.items(), values):
                if axis.methods is not None and method not in axis.methods:
                    continue
                if value in axis.skip.get(method, []):
                    skipped = True
                layer, name = key.split(".", 1)
                point.setdefault(layer, {})[name] = value
            if not skipped:
                tag = json.dumps(point, sort_keys=True, default=str)
                by_overrides.setdefault(tag, ([], point))[0].append(method)
        points.extend(by_overrides.values())
    return points


def _part_suite(suite: Suite, index: int, part: dict[str, Any]) -> Suite:
    """One of a suite's `parts` as a suite of its own: the part's fields over the suite's."""
    fields = set(Suite.model_fields) - {"name", "profiles", "parts", "options"}
    unknown = sorted(set(part) - fields)
    if unknown:
        raise BenchError(f"suite {suite.name!r}: parts[{index}] has unknown field(s) {', '.join(unknown)}; "
                         f"valid fields: {', '.join(sorted(fields))}")
    merged = {**suite.model_dump(), "parts": [], "profiles": {}, **part}
    for key, listed in (("method_settings", "methods"), ("backbone_overrides", "backbones"),
                        ("split_settings", "splits"), ("dataset_settings", "datasets")):
        if key not in part:
            merged[key] = {k: v for k, v in merged[key].items() if k in merged[listed]}
    try:
        return Suite.model_validate(merged)
    except ValidationError as exc:
        raise BenchError(f"suite {suite.name!r}: parts[{index}]: {_one_line(exc)}") from None


def _check_method_overrides(suite: Suite, methods: list[str], overrides: dict | None) -> dict[str, set[str]]:
    """A `--set method.KEY` that no method of the suite has is an error, never silently dropped; returns
    each method's setting names."""
    from bench.catalog import METHODS

    method_keys = {m: set(METHODS.get(m).Settings.model_fields) for m in dict.fromkeys(methods)}
    unknown = set((overrides or {}).get("method", {})) - set().union(*method_keys.values())
    if unknown:
        raise BenchError(f"unknown method setting(s) {', '.join(sorted(unknown))} for the methods of suite "
                         f"{suite.name!r}; valid settings: " + "; ".join(
                             f"{m}: {', '.join(sorted(k)) or '(none)'}" for m, k in method_keys.items()))
    return method_keys


def _check_unseen_users(suite: str, split: str, backbone: str) -> None:
    """A split whose test users are absent from training (cold_users) runs only on backbones that fold a
    user in from its sequence (the sequential ones): an ID table has no row learnt for such a user."""
    from bench.backbones import BACKBONES
    from bench.data.splits import SPLIT_SETTINGS

    if getattr(SPLIT_SETTINGS[split], "unseen_users", False) and not BACKBONES[backbone].sequential:
        sequential = ", ".join(name for name, b in BACKBONES.items() if b.sequential)
        raise BenchError(f"suite {suite!r}: split {split!r} holds its test users out of training, and backbone "
                         f"{backbone!r} cannot score a user it never saw; use a sequential backbone ({sequential})"
                         f" or split 'new_users_fewshot' (held-out users keep their first keep_history "
                         f"interactions in training)")


def expand(suite: Suite, overrides: dict[str, dict[str, Any]] | None = None,
           _method_keys_checked: bool = False) -> list[RunSpec]:
    """Every run of the suite, resolved and validated (unknown names/settings raise BenchError).

    A suite `grid` expands to one sub-grid per point; `--set` overrides win over grid values; each of
    the suite's `parts` adds its own sub-grid."""
    if suite.parts:
        # settings may name what only a part runs (a backbone of a part, say); never what nothing runs
        base_update: dict[str, Any] = {"parts": []}
        for key, listed in (("method_settings", "methods"), ("backbone_overrides", "backbones"),
                            ("split_settings", "splits"), ("dataset_settings", "datasets")):
            everywhere = set(getattr(suite, listed)).union(*(part.get(listed, []) for part in suite.parts))
            for name in getattr(suite, key):
                if name not in everywhere:
                    raise BenchError(f"suite {suite.name!r}: settings given for {listed[:-1]} {name!r}, which "
                                     f"neither the suite nor its parts run; they run: {', '.join(sorted(everywhere))}")
            base_update[key] = {k: v for k, v in getattr(suite, key).items() if k in getattr(suite, listed)}
        # `--set method.KEY` must fit some method of the suite or its parts (each sub-grid applies it to its
        # methods that have KEY)
        parts = [_part_suite(suite, index, part) for index, part in enumerate(suite.parts)]
        _check_method_overrides(suite, [*suite.methods, *(m for p in parts for m in p.methods)], overrides)
        specs = {s.run_id: s for s in expand(suite.model_copy(update=base_update), overrides, True)}
        for sub in parts:
            for spec in expand(sub, overrides, True):
                specs.setdefault(spec.run_id, spec)
        return list(specs.values())
    if suite.grid:
        overrides = overrides or {}
        specs: dict[str, RunSpec] = {}
        for methods, point in _grid_points(suite):
            sub = suite.model_copy(update={
                "grid": {}, "methods": methods,
                "method_settings": {m: v for m, v in suite.method_settings.items() if m in methods}})
            merged = {layer: {**point.get(layer, {}), **overrides.get(layer, {})}
                      for layer in {*point, *overrides}}
            for spec in expand(sub, merged, _method_keys_checked):
                specs.setdefault(spec.run_id, spec)
        return list(specs.values())
    from bench.backbones import resolve_backbone_config
    from bench.catalog import METHODS
    from bench.data.cards import load_card
    from bench.data.splits import resolve_split_params
    from bench.encoders import ENCODER_NAMES, EncoderSettings
    from bench.settings import validate_settings

    overrides = overrides or {}
    encoders = [suite.encoder] if isinstance(suite.encoder, str) else list(suite.encoder)
    encoder_settings = {}
    for encoder in encoders:
        if encoder not in ENCODER_NAMES:
            raise UnknownChoiceError("encoder", encoder, ENCODER_NAMES)
        encoder_settings[encoder] = validate_settings(
            EncoderSettings, {**suite.encoder_settings, **overrides.get("encoder", {})},
            f"encoder {encoder!r}").model_dump(mode="json")
    for layer, names in (("split", suite.split_settings), ("backbone", suite.backbone_overrides),
                         ("method", suite.method_settings), ("dataset", suite.dataset_settings)):
        listed = {"split": suite.splits, "backbone": suite.backbones, "method": suite.methods,
                  "dataset": suite.datasets}[layer]
        for name in names:
            if name not in listed:
                raise BenchError(f"suite {suite.name!r}: settings given for {layer} {name!r}, which the "
                                 f"suite does not run; it runs: {', '.join(listed)}")
    # `--set method.KEY=V` goes to the suite's methods that have KEY (e.g. base_model for the LLM methods,
    # not for `random`); a key no method of the suite has is an error, never silently dropped
    # (already checked against the suite and all its parts when this is one of their sub-grids)
    method_keys = _check_method_overrides(suite, suite.methods, None if _method_keys_checked else overrides)
    specs = []
    for dataset in suite.datasets:
        dataset_settings = {**suite.dataset_settings.get(dataset, {}), **overrides.get("dataset", {})}
        card = load_card(dataset, dataset_settings)  # validates the name and the settings
        for split in suite.splits:
            split_params = resolve_split_params(split, {**suite.split_settings.get(split, {}),
                                                        **overrides.get("split", {})})
            for backbone in suite.backbones:
                _check_unseen_users(suite.name, split, backbone)
                backbone_config = resolve_backbone_config(backbone, {
                    **suite.backbone_settings, **suite.backbone_overrides.get(backbone, {}),
                    **overrides.get("backbone", {})})
                for method in suite.methods:
                    cls = METHODS.get(method)
                    if backbone not in cls.backbones:
                        raise BenchError(f"suite {suite.name!r}: method {method!r} does not run on backbone "
                                         f"{backbone!r}; valid backbones: {', '.join(cls.backbones)}")
                    raw = {**suite.method_settings.get(method, {}), **{
                        k: v for k, v in overrides.get("method", {}).items() if k in method_keys[method]}}
                    _check_preset_holds(suite.name, method, raw)
                    settings = METHODS.settings(method, raw)  # the entry's preset, then the suite's values
                    uses_encoder = cls.needs_encoder
                    for encoder in encoders if uses_encoder else [None]:
                        for seed in suite.seeds:
                            specs.append(RunSpec(  # a data path or card file runs under its data set's name
                                dataset=card.name, dataset_settings=card.model_dump(mode="json"),
                                split=split, split_settings=split_params,
                                backbone=backbone, backbone_settings=backbone_config,
                                method=method, method_settings=settings.model_dump(mode="json"),
                                encoder=encoder,
                                encoder_settings=encoder_settings[encoder] if uses_encoder else {},
                                seed=seed))
    unique = {spec.run_id: spec for spec in specs}
    return list(unique.values())


def _cells(specs: list[RunSpec]) -> dict[str, list[RunSpec]]:
    """Runs grouped by cell: everything of the spec but its seed, in first-seen order."""
    cells: dict[str, list[RunSpec]] = {}
    for spec in specs:
        cells.setdefault(spec.model_copy(update={"seed": 0}).canonical_json(), []).append(spec)
    return cells


def with_extra_seeds(specs: list[RunSpec], count: int) -> list[RunSpec]:
    """`specs` plus, for every cell among them (a spec but its seed), `count` more seeds after the cell's last
    one: max + 1 .. max + count. Only the run seed changes (every setting stays the cell's), so the run ids are
    those of the same cell under more seeds, and asking again for the same count runs nothing new."""
    out = list(specs)
    for runs in _cells(specs).values():
        last = max(s.seed for s in runs)
        out += [runs[0].model_copy(update={"seed": seed}) for seed in range(last + 1, last + 1 + count)]
    return out


def with_stored_seeds(specs: list[RunSpec], has) -> list[RunSpec]:
    """`specs` plus the stored runs of their cells at the seeds after each cell's last (`has(run_id)`: a record
    is complete), up to the first seed not stored: the seeds `bench run --extra-seeds` added to some cells."""
    out = list(specs)
    for runs in _cells(specs).values():
        seed = max(s.seed for s in runs) + 1
        while has((extra := runs[0].model_copy(update={"seed": seed})).run_id):
            out.append(extra)
            seed += 1
    return out
