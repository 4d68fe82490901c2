"""Select stored runs by spec fields, whichever suite produced them, and pair two selections.

A selector is a mapping of spec fields to values: top-level fields (`dataset`, `split`, `backbone`,
`method`, `encoder`, `seed`) or one setting as `LAYER.KEY` (the `--set` spelling), e.g.
`{"backbone": "lightgcn", "backbone.embedding_size": 256}`. A value may be a list (any of).

Two selections are compared inside a *context*: runs that agree on everything but the method side
(method, method settings, encoder, encoder settings) and the seed, so A and B saw the same data,
split and backbone settings. Inside a context each side must match one *variant* (one method with its
settings and encoder): a side matching several (llm2rec trained in-domain and on ml-1m, PtE with and
without held-out user profiles) is an error naming the settings that tell them apart, never a silent
choice; name the variant with one of them (`method.train_dataset=null` selects the setting left at None).
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
    is 0 in a record that predates it, a card's `columns` {}). Without this, an old and a new record of one context differ in
    their resolved settings and are never paired (claims, `bench compare`). A spec that no longer resolves
    (a setting since removed) is returned as stored."""
    from bench.backbones import resolve_backbone_config
    from bench.catalog import METHODS
    from bench.data.cards import load_card
    from bench.data.splits import resolve_split_params

    try:
        filled = spec.model_copy(update={
            "dataset_settings": load_card(spec.dataset, spec.dataset_settings).model_dump(mode="json"),
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


NULL_WORDS = ("None", "null", "~")  # selector values that mean a setting left at None (YAML reads `null`, `~`)


def _same(value: Any, wanted: Any) -> bool:
    """A stored value against one selector value: equal, or equal as text (`256` vs 256); a null value
    (None, `None`, `null`) matches a setting left at None, or absent, and nothing else."""
    if wanted is None or (isinstance(wanted, str) and wanted in NULL_WORDS):
        return value is None or value == wanted
    return value == wanted or (value is not None and str(value) == str(wanted))


def matches(spec: RunSpec, selector: dict[str, Any]) -> bool:
    for key, wanted in selector.items():
        value = field_value(spec, key)
        options = wanted if isinstance(wanted, list) else [wanted]
        if not any(_same(value, o) for o in options):
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
    """Runs of A and B in one context, matched on seed (each side one variant: `pair` refuses more)."""

    context: str
    runs_a: list[RunSpec]
    runs_b: list[RunSpec]
    other_variants: int = 0  # always 0: a side matching several variants is an error (kept for callers)
    notes: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({s.seed for s in self.runs_a} & {s.seed for s in self.runs_b})

    @property
    def spec(self) -> RunSpec:
        return self.runs_a[0]


def _flat(data: Any, prefix: str) -> dict[str, Any]:
    """Nested settings as selector keys: {'csft': {'max_steps': 40}} -> {'method.csft.max_steps': 40}."""
    if not isinstance(data, dict) or not data:
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}.{key}"))
    return out


def variant_fields(spec: RunSpec) -> dict[str, Any]:
    """The method side of a spec as selector keys: `method`, `encoder`, `method.KEY`, `encoder.KEY`."""
    out = {"method": spec.method, "encoder": spec.encoder}
    for layer in ("method", "encoder"):
        for key, value in getattr(spec, LAYERS[layer]).items():
            out.update(_flat(value, f"{layer}.{key}"))
    return out


def _show(value: Any) -> str:
    """A setting's value as a selector would spell it: null, 'ml-1m', 256, true."""
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value, sort_keys=True, default=str)


def selector_text(selector: dict[str, Any]) -> str:
    """`llm2rec` for {'method': 'llm2rec'}, else KEY=VALUE pairs."""
    if set(selector) == {"method"} and isinstance(selector["method"], str):
        return selector["method"]
    return ",".join(f"{k}={v}" for k, v in selector.items()) or "{}"


def ambiguity(runs: list[RunSpec], selector: dict[str, Any], context: str) -> str:
    """'' when `runs` (one side's runs in one context) are one variant; else the one-line error: the
    variants, the settings that tell them apart with each variant's values and seeds, and what to add."""
    by_variant: dict[str, list[RunSpec]] = {}
    for spec in runs:
        by_variant.setdefault(variant_key(spec), []).append(spec)
    if len(by_variant) < 2:
        return ""
    # the best-covered variant first
    ranked = sorted(by_variant.items(), key=lambda kv: (-len({s.seed for s in kv[1]}), kv[0]))
    variants = [(variant_fields(v[0]), len({s.seed for s in v})) for _, v in ranked]
    keys = sorted({k for fields, _ in variants for k in fields})
    differ = [k for k in keys if len({_show(f.get(k)) for f, _ in variants}) > 1]
    # the settings the selector does not already name first (a list value in it can match several)
    differ = sorted(differ, key=lambda k: (k in selector, k not in ("method", "encoder"), k))
    if len(differ) == 1:
        key = differ[0]
        options = " or ".join(f"{_show(f.get(key))} ({n} seed{'s' * (n != 1)})" for f, n in variants)
        what = f"{key} = {options}"
    else:
        options = " or ".join(", ".join(f"{k} = {_show(f.get(k))}" for k in differ) + f" ({n} seed{'s' * (n != 1)})"
                              for f, n in variants)
        what = f"{', '.join(differ)} differ: {options}"
    # a key taking a distinct value in every variant tells them all apart alone
    alone = [k for k in differ if len({_show(f.get(k)) for f, _ in variants}) == len(variants)]
    hint = (f"add {alone[0]}=... to the selection" if alone else
            f"add {', '.join(f'{k}=...' for k in differ)} to the selection")
    return f"`{selector_text(selector)}` matches {len(variants)} variants in {context}: {what}; {hint}"


def pair(specs: list[RunSpec], where: dict[str, Any], sel_a: dict[str, Any],
         sel_b: dict[str, Any]) -> list[Pairing]:
    """Every context (matching `where`) holding runs of both A and B, most paired seeds first.
    Fields a side names (e.g. `backbone: mf` on one side) are left out of the context. A side matching
    more than one variant (method and its settings, encoder and its settings) in a context it shares with
    the other side is a BenchError naming the settings that tell the variants apart."""
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
    errors = []
    for runs_a, runs_b in contexts.values():
        if not runs_a or not runs_b:
            continue
        first = runs_a[0]
        context = describe_context(first, varying.get((first.dataset, first.split, first.backbone)))
        problems = [m for runs, sel in ((runs_a, sel_a), (runs_b, sel_b)) if (m := ambiguity(runs, sel, context))]
        if problems:
            errors += problems
            continue
        pairing = Pairing(context, sorted(runs_a, key=lambda s: s.seed), sorted(runs_b, key=lambda s: s.seed))
        if pairing.seeds:
            out.append(pairing)
    if errors:
        more = len(errors) - 1
        raise BenchError(sorted(errors)[0] + (f" (and {more} more ambiguous context{'s' * (more > 1)})" if more else ""))
    return sorted(out, key=lambda p: (-len(p.seeds), p.context))
