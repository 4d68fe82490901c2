"""Select stored runs by spec fields, whichever suite produced them, and pair two selections.

A selector is a mapping of spec fields to values: top-level fields (`dataset`, `split`, `backbone`,
`method`, `encoder`, `seed`) or one setting as `LAYER.KEY` (the `--set` spelling), e.g.
`{"backbone": "lightgcn", "backbone.embedding_size": 256}`. A value may be a list (any of).

Two selections are compared inside a *context*: runs that agree on everything but the method side
(method, method settings, encoder, encoder settings) and the seed, so A and B saw the same data,
split and backbone settings. Inside a context each side takes its variant with the most seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from bench.errors import BenchError
from bench.records import ResultStore
from bench.spec import RunSpec

LAYERS = {"dataset": "dataset_settings", "split": "split_settings", "backbone": "backbone_settings",
          "method": "method_settings", "encoder": "encoder_settings"}
TOP_LEVEL = ("dataset", "split", "backbone", "method", "encoder", "seed")
METHOD_SIDE = ("method", "method_settings", "encoder", "encoder_settings")


def current_settings(spec: RunSpec) -> RunSpec:
    """The stored spec with the settings added since its record was written filled in at their defaults
    (a new setting's default keeps the old behaviour, so the run id does not move: `split.eval_negatives`
    is 0 in a record that predates it). Without this, an old and a new record of one context differ in
    their resolved settings and are never paired (claims, `bench compare`). A spec that no longer resolves
    (a setting since removed) is returned as stored."""
    from bench.catalog import METHODS
    from bench.data.splits import resolve_split_params
    from methods.backbones.cf import resolve_backbone_config

    try:
        filled = spec.model_copy(update={
            "split_settings": resolve_split_params(spec.split, spec.split_settings),
            "backbone_settings": (resolve_backbone_config(spec.backbone, spec.backbone_settings)
                                  if spec.backbone != "none" else spec.backbone_settings),
            "method_settings": METHODS.settings(spec.method, spec.method_settings).model_dump(mode="json")})
    except (BenchError, ValueError, KeyError):
        return spec
    return filled if filled.run_id == spec.run_id else spec


def stored_specs(store: ResultStore) -> list[RunSpec]:
    """The spec of every complete record in the store, with the settings added since filled in at their
    defaults (`current_settings`); records of another schema are left out."""
    out = []
    for record in store.records():
        try:
            out.append(current_settings(RunSpec.model_validate(record["spec"])))
        except (KeyError, ValueError):
            continue
    return out


def field_value(spec: RunSpec, key: str) -> Any:
    """`dataset`, `seed`, ... or `backbone.embedding_size` (a resolved setting); missing -> None."""
    if key in TOP_LEVEL:
        return getattr(spec, key)
    layer, _, name = key.partition(".")
    if layer not in LAYERS or not name:
        raise BenchError(f"selector key {key!r}: use one of {', '.join(TOP_LEVEL)} or LAYER.KEY with LAYER "
                         f"one of {', '.join(LAYERS)}")
    value: Any = getattr(spec, LAYERS[layer])
    for part in name.split("."):  # nested settings, e.g. method.csft.max_steps
        value = value.get(part) if isinstance(value, dict) else None
    return value


def matches(spec: RunSpec, selector: dict[str, Any]) -> bool:
    for key, wanted in selector.items():
        value = field_value(spec, key)
        options = wanted if isinstance(wanted, list) else [wanted]
        if not any(value == o or (o is not None and str(value) == str(o)) for o in options):
            return False
    return True


def parse_selector(text: str | list[str] | dict | None) -> dict[str, Any]:
    """`method=llminit-var,encoder=mpnet` or ['split=half_history', ...] (YAML values) -> selector."""
    if text is None:
        return {}
    if isinstance(text, dict):
        return dict(text)
    parts = [p for item in ([text] if isinstance(text, str) else text) for p in item.split(",") if p.strip()]
    out = {}
    for part in parts:
        if "=" not in part:
            raise BenchError(f"selector {part!r}: expected KEY=VALUE, e.g. split=half_history or "
                             f"backbone.embedding_size=256")
        key, value = part.split("=", 1)
        field_value(RunSpec(dataset="", split="", backbone="", method=""), key.strip())  # validates the key
        out[key.strip()] = yaml.safe_load(value)
    return out


# split settings that vary with the run seed by design (ctr: one few-shot sample per seed, shots_seed = run
# seed): part of the seed, never of the context (tables, comparisons and claims pool them as seeds)
PER_SEED_SPLIT_SETTINGS = frozenset({"shots_seed"})


def context_split_settings(spec: RunSpec) -> dict[str, Any]:
    """The spec's split settings less the per-seed ones: what tells one split context from another."""
    return {k: v for k, v in spec.split_settings.items() if k not in PER_SEED_SPLIT_SETTINGS}


def context_key(spec: RunSpec, ignore: set[str] = frozenset()) -> str:
    """What A and B must share: the spec without its method side, seed (and per-seed split settings) and the
    `ignore`d fields."""
    data = spec.model_dump(mode="json", exclude={*METHOD_SIDE, "seed"})
    data[LAYERS["split"]] = context_split_settings(spec)
    for key in ignore:
        if key in LAYERS:  # a side names its own backbone (split, ...): its settings go with it
            data.pop(key, None)
            data.pop(LAYERS[key], None)
        elif "." in key and key.split(".", 1)[0] in LAYERS:
            layer, name = key.split(".", 1)
            data.get(LAYERS[layer], {}).pop(name.split(".")[0], None)
    return json.dumps(data, sort_keys=True, default=str)


def side_fields(*selectors: dict[str, Any]) -> set[str]:
    """Fields a side selector names beyond the method side: they may differ between A and B."""
    return {k for sel in selectors for k in sel if k not in ("method", "encoder", "seed")
            and not k.startswith(("method.", "encoder."))}


def variant_key(spec: RunSpec) -> str:
    return json.dumps(spec.model_dump(mode="json", include=set(METHOD_SIDE)), sort_keys=True, default=str)


def describe_context(spec: RunSpec, varying: set[str] | None = None) -> str:
    """`ml-100k/half_history/lightgcn` plus the backbone/split settings that tell contexts apart."""
    text = f"{spec.dataset}/{spec.split}/{spec.backbone}"
    extra = []
    for layer in ("dataset", "split", "backbone"):
        values = context_split_settings(spec) if layer == "split" else getattr(spec, LAYERS[layer])
        for key, value in sorted(values.items()):
            if varying and f"{layer}.{key}" in varying:
                extra.append(f"{layer}.{key}={value}")
    return text + (f" [{', '.join(extra)}]" if extra else "")


def varying_settings(specs: list[RunSpec]) -> set[str]:
    """LAYER.KEY settings (dataset, split, backbone) that differ among `specs`."""
    out = set()
    for layer in ("dataset", "split", "backbone"):
        keys = {k for s in specs for k in getattr(s, LAYERS[layer])}
        for key in keys:
            values = {json.dumps(getattr(s, LAYERS[layer]).get(key), sort_keys=True, default=str) for s in specs}
            if len(values) > 1:
                out.add(f"{layer}.{key}")
    return out


def variant_label(spec: RunSpec) -> str:
    return f"{spec.method} [{spec.encoder}]" if spec.encoder else spec.method


@dataclass
class Pairing:
    """Runs of A and B in one context, matched on seed."""

    context: str
    runs_a: list[RunSpec]
    runs_b: list[RunSpec]
    other_variants: int = 0  # variants of A or B in this context left out (fewer seeds)
    notes: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({s.seed for s in self.runs_a} & {s.seed for s in self.runs_b})

    @property
    def spec(self) -> RunSpec:
        return self.runs_a[0]


def _best_variant(runs: list[RunSpec]) -> tuple[list[RunSpec], int]:
    by_variant: dict[str, list[RunSpec]] = {}
    for spec in runs:
        by_variant.setdefault(variant_key(spec), []).append(spec)
    ranked = sorted(by_variant.items(), key=lambda kv: (-len({s.seed for s in kv[1]}), kv[0]))
    return sorted(ranked[0][1], key=lambda s: s.seed), len(ranked) - 1


def pair(specs: list[RunSpec], where: dict[str, Any], sel_a: dict[str, Any],
         sel_b: dict[str, Any]) -> list[Pairing]:
    """Every context (matching `where`) holding runs of both A and B, most paired seeds first.
    Fields a side names (e.g. `backbone: mf` on one side) are left out of the context."""
    pool = [s for s in specs if matches(s, where)]
    ignore = side_fields(sel_a, sel_b)
    contexts: dict[str, tuple[list[RunSpec], list[RunSpec]]] = {}
    for spec in pool:
        a, b = matches(spec, sel_a), matches(spec, sel_b)
        if a or b:
            entry = contexts.setdefault(context_key(spec, ignore), ([], []))
            if a:
                entry[0].append(spec)
            if b and not a:
                entry[1].append(spec)
    out = []
    paired = [s for a, b in contexts.values() if a and b for s in a + b]
    varying = {names: varying_settings([s for s in paired if (s.dataset, s.split, s.backbone) == names])
               for names in {(s.dataset, s.split, s.backbone) for s in paired}}
    for runs_a, runs_b in contexts.values():
        if not runs_a or not runs_b:
            continue
        best_a, left_a = _best_variant(runs_a)
        best_b, left_b = _best_variant(runs_b)
        names = (best_a[0].dataset, best_a[0].split, best_a[0].backbone)
        pairing = Pairing(describe_context(best_a[0], varying.get(names)), best_a, best_b, left_a + left_b)
        if pairing.seeds:
            out.append(pairing)
    return sorted(out, key=lambda p: (-len(p.seeds), p.context))
