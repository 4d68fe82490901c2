"""Run identity: what a run id hashes (Inspect's passed-arguments-plus-version pattern).

The id of a RunSpec is the sha256 of: the layer names (dataset, split, backbone, method, encoder), the
seed, one `version` per layer, and only the settings that differ from that layer's defaults (runtime
fields left out; path-valued settings as the content hash of what they point to). So:
- a new setting whose default reproduces the old behaviour moves no id;
- changing a default or a behaviour bumps the class's `version`, which moves exactly its runs' ids
  (tests/test_identity.py pins golden ids and a snapshot of every default to enforce this).
"""

from __future__ import annotations

import json
import os
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.hashing import content_hash, json_hash
from bench.settings import path_keys, settings_diff

SCHEME = 2  # 1: the hash of the fully resolved spec (before versioned identities)
# keys stored in records made before run options existed: they never changed results and are not settings
FORMER_RUNTIME_KEYS = {"backbone": {"eval_batch_size"}, "method": {"progress", "eval_batch_size", "prefix_cache"}}
# values of path settings that name a builtin asset or card, not a path
KEYWORDS = {"smollm2"}


def dangling_link(path: Path) -> Path | None:
    """The first symbolic link at or under `path` whose target is missing (None: none); a content hash of
    the folder could not read it."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return path
    if not path.is_dir():
        return None
    for root, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            entry = Path(root) / name
            if entry.is_symlink() and not entry.exists():
                return entry
    return None


MODEL_MARKERS = ("config.json", "modules.json")  # a transformers / sentence-transformers model folder


def check_path_setting(value: str, where: str, model: bool = False) -> Path:
    """The path a path setting names, checked: it exists, holds no dangling symbolic link and (`model`) is a
    model folder (config.json or modules.json in it); BenchError (one line) naming `where` otherwise."""
    path = Path(value).expanduser()
    if path.is_symlink() and not path.exists():
        raise BenchError(f"{where}={value!r}: a dangling symbolic link (its target {os.readlink(path)!r} is missing)")
    if not path.exists():
        raise BenchError(f"{where}={value!r}: no such file or folder")
    broken = dangling_link(path)
    if broken is not None:
        raise BenchError(f"{where}={value!r}: {broken} is a dangling symbolic link (its target "
                         f"{os.readlink(broken)!r} is missing); remove it or restore its target")
    if model and not (path.is_dir() and any((path / marker).is_file() for marker in MODEL_MARKERS)):
        raise BenchError(f"{where}={value!r}: not a model folder (no {' or '.join(MODEL_MARKERS)} in it)")
    return path


def _stamp(path: Path) -> tuple:
    """A cheap change detector for a file or folder (sizes and modification times of its files)."""
    if path.is_file():
        stat = path.stat()
        return (stat.st_size, stat.st_mtime_ns)
    stamps = []
    for root, _, files in os.walk(path):
        for name in files:
            stat = os.stat(os.path.join(root, name))
            stamps.append((os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(stamps))


@lru_cache(maxsize=256)
def _cached_content_hash(path: str, stamp: tuple) -> str:
    return content_hash(path)


def path_identity(value: str, where: str) -> dict[str, str]:
    """{"sha256": content hash} of the file or folder `value` names; BenchError when it does not exist."""
    path = Path(value).expanduser()
    if not path.exists():
        check_path_setting(value, where)  # names a dangling link, else: no such file or folder
    try:
        stamp = _stamp(path)
    except FileNotFoundError:  # a file listed but gone: a dangling symbolic link (or a file removed meanwhile)
        check_path_setting(value, where)
        raise
    return {"sha256": _cached_content_hash(str(path.resolve()), stamp)}


def _replace_paths(diff: dict[str, Any], cls, where: str, keywords: set[str]) -> dict[str, Any]:
    for loc in path_keys(cls) if cls is not None else []:
        holder = diff
        for part in loc[:-1]:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict) or loc[-1] not in holder:
            continue
        value = holder[loc[-1]]
        if isinstance(value, str) and value not in keywords:
            holder[loc[-1]] = path_identity(value, f"{where} setting {'.'.join(loc)}")
    return diff


def _layer(name: str | None, version: int, cls, values: dict[str, Any], defaults: dict[str, Any],
           where: str, drop: set[str] = frozenset(), keywords: set[str] = frozenset()) -> dict[str, Any]:
    values = {k: v for k, v in values.items() if k not in drop}
    diff = settings_diff(cls, values, defaults, where)
    return {"name": name, "version": version, "settings": _replace_paths(diff, cls, where, set(keywords))}


@cache
def _builtin_card_json(name: str) -> str:
    from bench.data.cards import load_card

    return load_card(name).model_dump_json()


def dataset_layer(spec) -> dict[str, Any]:
    from bench.data.cards import CARD_NAMES, DatasetCard

    card = dict(spec.dataset_settings)
    builtin = spec.dataset in CARD_NAMES
    defaults = (json.loads(_builtin_card_json(spec.dataset)) if builtin
                else {k: f.get_default(call_default_factory=True) for k, f in DatasetCard.model_fields.items()})
    defaults = {k: (list(v) if isinstance(v, tuple) else v) for k, v in defaults.items()}
    layer = _layer(card.get("name", spec.dataset), DatasetCard.version, DatasetCard, card, defaults,
                   f"dataset {spec.dataset!r}")
    layer["settings"].pop("name", None)
    for key in ("path", "meta_path"):  # DatasetCard paths are plain settings: identify them by content
        value = layer["settings"].get(key)
        if isinstance(value, str):
            layer["settings"][key] = path_identity(value, f"dataset {spec.dataset!r} setting {key}")
    return layer


def split_layer(spec) -> dict[str, Any]:
    from bench.data.splits import SPLIT_SETTINGS, resolve_split_params

    cls = SPLIT_SETTINGS[spec.split]
    return _layer(spec.split, cls.version, cls, spec.split_settings, resolve_split_params(spec.split, {}),
                  f"split {spec.split!r}")


def backbone_layer(spec) -> dict[str, Any]:
    from bench.backbones import BACKBONES

    cls = BACKBONES[spec.backbone].settings
    return _layer(spec.backbone, cls.version, cls, spec.backbone_settings, BACKBONES[spec.backbone].defaults,
                  f"backbone {spec.backbone!r}", drop=FORMER_RUNTIME_KEYS["backbone"])


def method_layer(spec) -> dict[str, Any]:
    from bench.catalog import METHODS
    from bench.data.cards import CARD_NAMES

    cls = METHODS.get(spec.method)
    defaults = METHODS.defaults(spec.method)  # the class's defaults with the entry's preset
    return _layer(spec.method, cls.version, cls.Settings, spec.method_settings, defaults,
                  f"method {spec.method!r}", drop=FORMER_RUNTIME_KEYS["method"] - set(defaults),
                  keywords=KEYWORDS | set(CARD_NAMES))


def encoder_layer(spec) -> dict[str, Any] | None:
    if spec.encoder is None:
        return None
    from bench.encoders import EncoderSettings

    return _layer(spec.encoder, EncoderSettings.version, EncoderSettings, spec.encoder_settings,
                  EncoderSettings().model_dump(mode="json"), f"encoder {spec.encoder!r}")


def identity(spec) -> dict[str, Any]:
    """The object a run id hashes (also written to the record as `identity`)."""
    return {"scheme": SCHEME, "seed": spec.seed, "dataset": dataset_layer(spec), "split": split_layer(spec),
            "backbone": backbone_layer(spec), "method": method_layer(spec), "encoder": encoder_layer(spec)}


def run_id(spec) -> str:
    return json_hash(identity(spec), 16)


def defaults_snapshot() -> dict[str, dict[str, Any]]:
    """Every settings class's version and defaults, per layer entry (tests/golden/settings_defaults.json
    pins it: a default that changes without a version bump fails tests/test_identity.py)."""
    from bench.backbones import BACKBONES
    from bench.catalog import METHODS
    from bench.data.cards import CARD_NAMES, DatasetCard, load_card
    from bench.data.splits import SPLIT_SETTINGS
    from bench.encoders import EncoderSettings

    out: dict[str, dict[str, Any]] = {}
    for name in CARD_NAMES:
        out[f"dataset:{name}"] = {"version": DatasetCard.version, "defaults": load_card(name).model_dump(mode="json")}
    for name, cls in SPLIT_SETTINGS.items():
        out[f"split:{name}"] = {"version": cls.version, "defaults": cls().model_dump(mode="json")}
    for name, spec in BACKBONES.items():
        out[f"backbone:{name}"] = {"version": spec.settings.version, "defaults": spec.defaults}
    for name in METHODS.names():
        cls = METHODS.get(name)
        out[f"method:{name}"] = {"version": cls.version, "defaults": METHODS.defaults(name)}
    out["encoder"] = {"version": EncoderSettings.version, "defaults": EncoderSettings().model_dump(mode="json")}
    return json.loads(json.dumps(out, sort_keys=True))
