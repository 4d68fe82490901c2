"""Typed search spaces, declared next to the settings they tune (`bench tune`, bench/tuning.py).

A settings class declares `search_space: ClassVar[dict[str, SearchParam]]`: field name -> `FloatRange`,
`IntRange`, `Choice`, or `Nested` (the field is itself a settings object: its class's own space, its names
prefixed with `<field>.`). A ClassVar is not a setting: it enters no run id and no defaults snapshot.

Any entry may carry `when`: the entry is searched only when the resolved settings satisfy it (each named setting
equals the value; a list on either side means "is one of" / "contains"), so a cell never spends trials on a
setting its run does not use (LLM2Rec's MNTP learning rate when its entry runs CSFT only, a dropout of a model
that has none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = bool | int | float | str | None  # what Optuna stores for a categorical value


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # {setting: value}: searched only when each resolved setting equals the value (a list value: is one of it;
    # a list setting: contains the value)
    when: dict[str, Any] = Field(default_factory=dict)

    def active(self, settings: Mapping[str, Any]) -> bool:
        """Whether `when` holds for the resolved `settings` (a JSON dump of the settings object)."""
        for key, wanted in self.when.items():
            value = settings.get(key)
            if isinstance(wanted, (list, tuple)):
                if value not in wanted:
                    return False
            elif isinstance(value, (list, tuple)):
                if wanted not in value:
                    return False
            elif value != wanted:
                return False
        return True


class FloatRange(_Param):
    """A real setting between `low` and `high` (both included), uniform or log-uniform (`log`: low > 0)."""

    kind: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"FloatRange needs finite low < high (got {self.low}, {self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log FloatRange needs low > 0 (got {self.low})")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def bounds(self) -> list[Any]:
        return [self.low, self.high]

    def describe(self) -> str:
        return f"{self.low:g}..{self.high:g}" + (" log" if self.log else "")


class IntRange(_Param):
    """An integer setting in low..high (both included), every `step`-th value, or log-uniform."""

    kind: Literal["int"] = "int"
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self):
        if self.low >= self.high:
            raise ValueError(f"IntRange needs low < high (got {self.low}, {self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log IntRange needs low >= 1 and step 1")
        return self

    def contains(self, value: Any) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
                and (value - self.low) % self.step == 0)

    def bounds(self) -> list[Any]:
        return [self.low, self.high]

    def describe(self) -> str:
        return f"{self.low}..{self.high}" + (f" step {self.step}" if self.step != 1 else "") + (" log" if self.log
                                                                                           else "")


class Choice(_Param):
    """One of a few values (numbers, strings, booleans), unordered for the sampler."""

    kind: Literal["choice"] = "choice"
    values: tuple[Scalar, ...]

    @model_validator(mode="after")
    def _distinct(self):
        if len(self.values) < 2 or len(set(map(repr, self.values))) != len(self.values):
            raise ValueError(f"a Choice needs at least two distinct values (got {list(self.values)})")
        return self

    def contains(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values) or (
            # 0 and 0.0 are the same weight decay: a float setting's JSON value may be either
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and any(isinstance(v, float) and value == v for v in self.values))

    def bounds(self) -> list[Any]:
        return list(self.values)

    def describe(self) -> str:
        return "{" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.values) + "}"


class Nested(_Param):
    """The field holds a settings object: search its class's own `search_space`, names prefixed `<field>.`."""

    kind: Literal["nested"] = "nested"


SearchParam = FloatRange | IntRange | Choice | Nested
Range = FloatRange | IntRange | Choice  # what a searched name resolves to


def declared(cls: type[BaseModel]) -> dict[str, SearchParam]:
    """The class's `search_space` as declared (inherited when a subclass declares none)."""
    return dict(getattr(cls, "search_space", None) or {})


def field_class(cls: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The settings class a field of `cls` holds (its annotation, or the class of its default), or None."""
    field = cls.model_fields.get(name)
    if field is None:
        return None
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    default = field.get_default(call_default_factory=True)
    return type(default) if isinstance(default, BaseModel) else None


def space_of(cls: type[BaseModel], settings: Mapping[str, Any] | None = None,
             skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Range]:
    """Dotted setting name -> range: what a run with these resolved `settings` (a JSON dump; None: the class's
    defaults) searches. Entries whose `when` fails and top-level names in `skip` (an entry's preset: what
    defines it is never tuned away) are left out; `Nested` entries recurse into the field's class."""
    if settings is None:
        settings = cls().model_dump(mode="json")
    out: dict[str, Range] = {}
    for name, param in declared(cls).items():
        if name in skip or not param.active(settings):
            continue
        if isinstance(param, Nested):
            sub = field_class(cls, name)
            if sub is None:
                raise TypeError(f"{cls.__name__}.search_space[{name!r}] is Nested, but {name!r} holds no settings "
                                f"object")
            for sub_name, sub_param in space_of(sub, settings.get(name) or {}).items():
                out[f"{name}.{sub_name}"] = sub_param
        else:
            out[name] = param
    return out


def get_dotted(values: Mapping[str, Any], name: str) -> Any:
    """`values["a"]["b"]` for the name "a.b" (KeyError when a level is missing)."""
    for part in name.split("."):
        values = values[part]
    return values


def set_dotted(values: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    """A copy of `values` with `name` ("a.b") set, nested dicts copied on the way (the input is unchanged)."""
    head, _, rest = name.partition(".")
    out = dict(values)
    out[head] = set_dotted(dict(out.get(head) or {}), rest, value) if rest else value
    return out
