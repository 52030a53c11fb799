"""The one configuration mechanism: every settings dataclass in minifm is a `ConfigBase`.

A config is a plain `@dataclass` that inherits `ConfigBase` and gets:

  to_dict()             the fields as a JSON-able dict (what run directories store in config.json)
  from_dict(values)     the inverse; an unknown key is an error that lists the valid ones, so a
                        typo in a TOML/JSON file is never silently ignored
  typed fields          on construction every field is checked against its annotation:
                          int    an int (True, 2.5 and "two" are refused)
                          float  an int or a float, stored as a float (True and "1e-3" are refused)
                          bool   True or False only (1, "no" and "yes" are refused)
                          str    a str
                          X | None  None or an X;  tuple[...]/list[...]  a list or tuple
  validate()            the class's own range and choice checks, run after the type checks;
                        the helpers `check_range` and `check_choice` below give one message shape

Errors are `ConfigError` (a ValueError) naming the config class, the field, what was seen and
what is valid; `ConfigError.field` lets the command line name the flag or file key instead.

Simplification: only the annotation shapes above are understood; any other annotation (a
nested dataclass, a dict) is accepted as it is.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing


class ConfigError(ValueError):
    """A configuration value of the wrong type or out of range; `.field` names the field."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def annotation_types(annotation) -> tuple[list, bool]:
    """(the non-None member types of an annotation, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members = list(typing.get_args(annotation))
    else:
        members = [annotation]
    allows_none = type(None) in members
    return [m for m in members if m is not type(None)], allows_none


def _coerce(kind, value):
    """`value` as a `kind` (int, float, bool, str, list/tuple), or raise TypeError saying what is wanted."""
    base = typing.get_origin(kind) or kind
    is_bool = isinstance(value, bool)
    if base is bool:
        if is_bool:
            return value
        raise TypeError("must be true or false")
    if base is int:
        if isinstance(value, numbers.Integral) and not is_bool:  # Python and NumPy integers
            return int(value)
        raise TypeError("must be an integer")
    if base is float:
        if isinstance(value, numbers.Real) and not is_bool:
            return float(value)
        raise TypeError("must be a number")
    if base is str:
        if isinstance(value, str):
            return value
        raise TypeError("must be a string")
    if base in (list, tuple):
        if isinstance(value, (list, tuple)):
            return base(value)
        raise TypeError(f"must be a {base.__name__}")
    return value  # an annotation this module does not check (see the module docstring)


class ConfigBase:
    """Base of every minifm settings dataclass: typed fields, to_dict / from_dict, validate()."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kinds, allows_none = annotation_types(hints[field.name])
            if value is None:
                if allows_none:
                    continue
                raise ConfigError(f"{type(self).__name__}.{field.name} must be set, got None", field.name)
            errors = []
            for kind in kinds:
                try:
                    object.__setattr__(self, field.name, _coerce(kind, value))  # works for frozen dataclasses too
                    break
                except TypeError as error:
                    errors.append(str(error))
            else:
                wanted = " or ".join(errors) + (" (or None)" if allows_none else "")
                raise ConfigError(f"{type(self).__name__}.{field.name} {wanted}, got {_describe(value)}",
                                  field.name)
        self.validate()

    def validate(self) -> None:
        """Range and choice checks of the subclass (type checks have already passed)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict):
        if not isinstance(values, dict):
            raise ConfigError(f"{cls.__name__}.from_dict needs a dict, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; valid keys are {cls.field_names()}",
                              unknown[0])
        return cls(**values)

    # ------------------------------------------------------------------ checks for validate()
    def check_range(self, field: str, low=None, high=None, low_open: bool = False, high_open: bool = False) -> None:
        """Raise ConfigError unless low <= value <= high (strict where *_open) and finite; a None bound is no bound."""
        value = getattr(self, field)
        if value is None:
            return
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        not_finite = isinstance(value, float) and not math.isfinite(value)
        if too_low or too_high or not_finite:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
            raise ConfigError(f"{type(self).__name__}.{field} must be in {bounds}, got {value!r}", field)

    def check_choice(self, field: str, choices) -> None:
        value = getattr(self, field)
        if value not in choices:
            raise ConfigError(f"{type(self).__name__}.{field} must be one of {list(choices)}, got {value!r}", field)


__all__ = ["ConfigBase", "ConfigError", "annotation_types"]
