"""A section of a plain (resolved) config tree into its dataclass, every error naming the field."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from hpcgen.config.checks import ConfigError


def build_section(cls: type, values: Any, path: str) -> Any:
    """Build dataclass `cls` from a mapping, naming `path.key` in every error."""
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must be a mapping of fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key {path}.{unknown[0]}: {path} takes {', '.join(sorted(known))}"
        )
    kwargs = {k: coerce(hints[k], v, f"{path}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def coerce(hint: Any, value: Any, path: str) -> Any:
    """Check a YAML value against a type hint; accept ints for floats and lists for tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(hint, value, path)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{path}={value!r} must be a list of {len(args)} values")
        return tuple(
            coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r} must be a list")
        (arg,) = typing.get_args(hint)
        return [coerce(arg, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{path}={value!r} has the wrong type: expected {hint.__name__}")
    return value


def _coerce_union(hint: Any, value: Any, path: str) -> Any:
    options = typing.get_args(hint)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        try:
            return coerce(option, value, path)
        except ConfigError:
            continue
    raise ConfigError(f"{path}={value!r} has the wrong type: expected {hint}")
