"""Checks every config runs when it is built: each value of its annotated type, every number
finite, and each rule of a setting stated once, in the words of its field."""

from __future__ import annotations

import math
import types
from dataclasses import fields
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

from charnn.errors import SettingError, literal

KIND_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}


def check(condition: bool, template: str) -> None:
    """Refuse with `template` (settings named as `{field}`) unless `condition` holds."""
    if not condition:
        raise SettingError(template)


def check_types(config: Any) -> None:
    """Every field of a dataclass holds a value of its annotated type, and every number is finite:
    a TOML file, a hand-edited checkpoint or Python code can hold "32" where 32 belongs, or nan,
    which compares false with every bound and so would pass them."""
    kind: Any = type(config)  # a frozen dataclass's class, hashable whatever mypy infers
    for name, annotation in field_types(kind).items():
        value = getattr(config, name)
        if not is_instance(value, annotation):
            raise SettingError(
                f"{{{name}}} must be {describe(annotation)}, not {literal(repr(value))}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingError(f"{{{name}}} must be a finite number, not {value!r}")


@cache
def field_types(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def is_instance(value: Any, annotation: Any) -> bool:
    if get_origin(annotation) in (Union, types.UnionType):
        return any(is_instance(value, arm) for arm in get_args(annotation))
    if get_origin(annotation) is tuple:  # tuple[str, ...]
        item = get_args(annotation)[0]
        return isinstance(value, tuple) and all(is_instance(v, item) for v in value)
    if annotation is type(None):
        return value is None
    if isinstance(value, bool):  # a bool is an int to Python, never a number of layers
        return annotation is bool
    if annotation is float:
        return isinstance(value, int | float)
    return isinstance(value, annotation)


def describe(annotation: Any) -> str:
    arms = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()
    named = [KIND_WORDS.get(arm) for arm in arms if arm is not type(None)]
    if arms and all(named):
        return " or ".join(str(word) for word in named) + (
            " (or left unset)" if type(None) in arms else ""
        )
    return KIND_WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Drop keys this version does not know, so older and newer checkpoints still load."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
