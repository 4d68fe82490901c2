"""Typed settings shared by every layer: validation with one-line errors, field markers, and the
non-default view of a settings dict that run ids hash.

A settings class is a frozen pydantic model with `extra="forbid"` and a class attribute `version`
(bumped when a default or a behaviour changes). Two field markers:
- `path_field`: the value names a file or folder; run ids hash its content, never the path string;
- `runtime_field`: the value changes how, not what, is computed (device, progress bars); run ids skip it.
"""

from __future__ import annotations

from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError

from bench.errors import BenchError

PATH_MARK = "bench_path"
RUNTIME_MARK = "bench_runtime"


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


def describe_field(cls: type[BaseModel], name: str) -> str:
    """What values a field takes, in words: 'integer >= 1', 'one of 'ED', 'ND'', 'true or false'."""
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
    try:
        return cls.model_validate(values)
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


def settings_diff(cls: type[BaseModel] | None, values: dict[str, Any], defaults: dict[str, Any],
                  where: str = "settings") -> dict[str, Any]:
    """The entries of `values` that differ from `defaults` (recursively into nested settings), without
    runtime fields; a key missing from `values` counts as its default. KeyError-free: a key `defaults`
    lacks is a BenchError (the settings belong to another version of the code)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        field = cls.model_fields.get(key) if cls is not None else None
        if field is not None and _marked(field, RUNTIME_MARK):
            continue
        if key not in defaults:
            raise BenchError(f"{where}: setting {key!r} is not a setting of this version; known: "
                             f"{', '.join(sorted(defaults))}")
        default = defaults[key]
        if isinstance(value, dict) and isinstance(default, dict):
            sub = settings_diff(_submodel(field.annotation) if field is not None else None, value, default,
                                f"{where}.{key}")
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
