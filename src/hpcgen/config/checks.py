"""The error every config check raises, and the two checks most fields use."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says which and what would."""


def check_choice(path: str, value: Any, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(
            f"{path}={value!r} is not valid: choose one of {', '.join(map(str, choices))}"
        )


def check_positive(path: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{path}={value!r} is not valid: it must be {bound}")
