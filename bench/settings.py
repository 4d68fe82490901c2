"""Typed settings shared by every layer: validation with one-line errors, field markers, and the
non-default view of a settings dict that run ids hash.

A settings class is a frozen pydantic model with `extra="forbid"` and a class attribute `version`
(bumped when a default or a behaviour changes). Two field markers:
- `path_field`: the value names a file or folder; run ids hash its content, never the path string;
- `runtime_field`: the value changes how, not what, is computed (device, progress bars); run ids skip it.
"""

from __future__ import annotations

import math
import re
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError

from bench.errors import BenchError

PATH_MARK = "bench_path"
RUNTIME_MARK = "bench_runtime"

# Upper bounds of the integer settings that state none of their own, checked by `validate_settings` for every
# settings class at once: past these a value is a typo or a unit slip (embedding_size=1e8), never a setting
# anyone runs, and it would fail (or hang) inside a run instead of before any. The first pattern matching a
# field's name gives its bound; every other integer setting is bounded by INT_LIMIT. A value within the bounds
# is unchanged, so no run id moves.
INT_LIMIT = 2**31 - 1
SIZE_LIMITS: tuple[tuple[re.Pattern, int], ...] = tuple((re.compile(pattern), bound) for pattern, bound in (
    (r"(^|_)(embedding_size|hidden_size)$", 16_384),
    (r"(^|_)inner_size$", 65_536),
    (r"(^|_)hidden_factor$", 1_024),
    (r"(^|_)(n_layers|num_layers|n_heads|num_heads)$", 1_024),
    (r"^(lora_)?r$", 4_096),
    (r"(^|_)epochs$", 100_000),
    (r"(^|_)batch_size$", 1_000_000),
    (r"(^|_)(max_len|max_length|history_length|max_history|max_new_tokens)$", 1_048_576),
    (r"(^|_)max_steps$", 100_000_000),
))


def path_field(default: Any, **kwargs: Any) -> Any:
    """A setting naming a local file or folder (or a builtin keyword such as "smollm2")."""
    return Field(default, json_schema_extra={PATH_MARK: True}, **kwargs)


def runtime_field(default: Any, **kwargs: Any) -> Any:
    """A setting that does not change results (left out of run ids)."""
    return Field(default, json_schema_extra={RUNTIME_MARK: True}, **kwargs)


def _marked(field, mark: str) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(mark))


def _submodel(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _types(annotation) -> list:
    """The types a field's annotation allows, None left out (`int | None` -> [int])."""
    if get_origin(annotation) in (Union, UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _own_upper_bound(field) -> bool:
    return any(getattr(meta, attr, None) is not None for meta in field.metadata for attr in ("le", "lt"))


def upper_bound(cls: type[BaseModel], name: str) -> int | None:
    """The bound `validate_settings` applies to integer setting `name` of `cls` beyond the field's own (None:
    the field is not an integer, or has an upper bound of its own)."""
    field = cls.model_fields[name]
    if int not in _types(field.annotation) or _own_upper_bound(field):
        return None
    return next((bound for pattern, bound in SIZE_LIMITS if pattern.search(name)), INT_LIMIT)


def describe_field(cls: type[BaseModel], name: str, central: bool = False) -> str:
    """What values a field takes, in words: 'integer >= 1', 'one of 'ED', 'ND'', 'true or false'; `central`:
    with the upper bound `validate_settings` adds to an integer setting without one (`upper_bound`)."""
    field = cls.model_fields[name]
    annotation = field.annotation
    union = get_origin(annotation) in (Union, UnionType)
    args = [a for a in get_args(annotation) if a is not type(None)] if union else [annotation]
    optional = union and type(None) in get_args(annotation)
    base = args[0]
    if get_origin(base) is Literal:
        words = "one of " + ", ".join(repr(v) for v in get_args(base))
    elif base is bool:
        words = "true or false"
    elif base is int:
        words = "integer"
    elif base is float:
        words = "number"
    elif base is str:
        words = "text"
    elif _submodel(base) is not None:
        words = "a mapping of " + ", ".join(_submodel(base).model_fields)
    else:
        words = getattr(base, "__name__", str(base))
    bounds = []
    for meta in field.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{symbol} {getattr(meta, attr)}")
    if central and base is int and upper_bound(cls, name) is not None:
        bounds.append(f"<= {upper_bound(cls, name)}")
    out = " ".join([words, " and ".join(bounds)]).strip()
    return out + (" or null" if optional else "")


def _field_at(cls: type[BaseModel], loc: tuple) -> tuple[type[BaseModel], str] | None:
    for position, part in enumerate(loc):
        if not isinstance(part, str) or part not in cls.model_fields:
            return None
        if position == len(loc) - 1:
            return cls, part
        sub = _submodel(cls.model_fields[part].annotation)
        if sub is None:
            return cls, part
        cls = sub
    return None


def _value_at(values: Any, loc: tuple) -> Any:
    for part in loc:
        if isinstance(values, dict) and part in values:
            values = values[part]
        else:
            return None
    return values


def validate_settings(cls: type[BaseModel], values: dict[str, Any] | BaseModel | None, where: str) -> BaseModel:
    """`cls` from `values`; BenchError (one line) naming `where`, the key, the value and what is valid."""
    if isinstance(values, cls):
        return values
    values = dict(values or {})
    unknown = sorted(set(values) - set(cls.model_fields))
    if unknown:
        raise BenchError(f"{where}: unknown setting {unknown[0]!r}; valid settings: "
                         f"{', '.join(sorted(cls.model_fields)) or '(none)'}")
    _check_booleans(cls, values, (), where)
    try:
        validated = cls.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(p for p in error["loc"] if not isinstance(p, int))
        key = ".".join(map(str, error["loc"]))
        if not loc:  # a check across fields (a model validator)
            raise BenchError(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None
        found = _field_at(cls, loc)
        if error["type"] == "extra_forbidden" and found is None and len(loc) > 1:
            parent = _field_at(cls, loc[:-1])
            sub = _submodel(parent[0].model_fields[parent[1]].annotation) if parent else None
            valid = f"; valid settings: {', '.join(sorted(sub.model_fields))}" if sub else ""
            raise BenchError(f"{where}: unknown setting {key!r}{valid}") from None
        valid = f" (valid: {describe_field(*found)})" if found else ""
        message = error["msg"].removeprefix("Value error, ")
        raise BenchError(f"{where}: setting {key}={_value_at(values, error['loc'])!r}: {message}{valid}") from None
    _check_values(validated, values, (), where)
    return validated


def _check_booleans(cls: type[BaseModel], values: Any, loc: tuple, where: str) -> None:
    """true / false given for a number setting is an error (pydantic would read it as 1 / 0: `epochs: true`
    would train one epoch)."""
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        field = cls.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            continue
        sub = _submodel(field.annotation)
        if sub is not None and isinstance(value, dict):
            _check_booleans(sub, value, (*loc, key), where)
            continue
        types = _types(field.annotation)
        if isinstance(value, bool) and bool not in types and (int in types or float in types):
            dotted = ".".join((*loc, key))
            raise BenchError(f"{where}: setting {dotted}={value!r}: a number is needed, not true / false "
                             f"(valid: {describe_field(cls, key)})")


def _check_values(model: BaseModel, values: Any, loc: tuple, where: str) -> None:
    """Every number of a validated settings object finite, every integer within its bound (`upper_bound`)."""
    cls = type(model)
    for name in cls.model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _check_values(value, values, (*loc, name), where)
            continue
        message = None
        if isinstance(value, float) and not math.isfinite(value):
            message = "must be a finite number"
        elif type(value) is int and (bound := upper_bound(cls, name)) is not None and value > bound:
            message = f"must be <= {bound}"
        if message is not None:
            given = _value_at(values, (*loc, name))
            raise BenchError(f"{where}: setting {'.'.join((*loc, name))}="
                             f"{(given if given is not None else value)!r}: {message} "
                             f"(valid: {describe_field(cls, name, central=True)})")


def settings_diff(cls: type[BaseModel] | None, values: dict[str, Any], defaults: dict[str, Any],
                  where: str = "settings") -> dict[str, Any]:
    """The entries of `values` that differ from `defaults` (recursively into nested settings), without
    runtime fields; a key missing from `values` counts as its default. KeyError-free: a key `defaults`
    lacks is a BenchError (the settings belong to another version of the code). Inside a setting whose value
    is a free mapping (a dict field, such as a card's `text_fields`: canonical field -> source column) a key the
    default lacks is a value that differs, not an unknown setting."""
    return _settings_diff(cls, values, defaults, where, free=False)


def _settings_diff(cls, values: dict[str, Any], defaults: dict[str, Any], where: str, free: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        field = cls.model_fields.get(key) if cls is not None else None
        if field is not None and _marked(field, RUNTIME_MARK):
            continue
        if key not in defaults and free:
            out[key] = value
            continue
        if key not in defaults:
            raise BenchError(f"{where}: setting {key!r} is not a setting of this version; known: "
                             f"{', '.join(sorted(defaults))}")
        default = defaults[key]
        if isinstance(value, dict) and isinstance(default, dict):
            sub_cls = _submodel(field.annotation) if field is not None else None
            sub = _settings_diff(sub_cls, value, default, f"{where}.{key}",
                                 free=free or (field is not None and sub_cls is None))
            if sub:
                out[key] = sub
        elif value != default or type(value) is bool and type(default) is not bool:
            out[key] = value
    return out


def path_keys(cls: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Locations of the path-valued fields of `cls` (nested settings included)."""
    found = []
    for name, field in cls.model_fields.items():
        if _marked(field, PATH_MARK):
            found.append((*prefix, name))
        sub = _submodel(field.annotation)
        if sub is not None:
            found.extend(path_keys(sub, (*prefix, name)))
    return found
