"""Validation shared by every pipeline config: closed sets as ``Literal`` fields, numeric bounds
as field metadata. A config refuses a bad value when it is built (also through ``replace``), so
the library checks what the CLI checks, and the CLI derives its messages from the config.

A field with :func:`cli` metadata is also a command-line option: ``steerlab.cli.options`` reads
its flag, type, default, choices, bounds and help from the dataclass (as TRL's parser does), so
each option is written once, here, torch-free (``--help`` imports the configs).

Example::

    @dataclass(frozen=True)
    class MyConfig(Checked):
        mode: Literal["fast", "all"] = field(default="fast", metadata=cli("how hard to try"))
        rate: float = field(default=0.1, metadata=bounds(gt=0, le=1) | cli("step size"))
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from .errors import SteerlabError

__all__ = [
    "MODEL_HELP",
    "Checked",
    "CliOption",
    "ConfigError",
    "bounds",
    "bounds_text",
    "check_values",
    "choices",
    "cli",
    "flag",
]


MODEL_HELP = "built-in name, HF id, local dir or .gguf"


class ConfigError(SteerlabError):
    """A config value out of its closed set or bounds; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def bounds(
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> dict[str, Any]:
    """Field metadata: the number must satisfy every bound given (and be finite)."""
    return {
        "bounds": {
            k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None
        }
    }


@dataclasses.dataclass(frozen=True)
class CliOption:
    """How a config field appears on the command line; see :func:`cli`."""

    help: str
    decls: tuple[str, ...] = ()
    parse: Callable[[Any], Any] | None = None


def cli(help: str, *decls: str, parse: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Field metadata: the field is a command-line option.

    Args:
        help: the option's help (choices, bounds and the default are added from the field).
        decls: flags replacing ``--field-name`` (e.g. ``"--model", "-m"``). On a bool field one
            flag makes a switch: ``--no-x`` sets the field to False, ``--x`` to True; without
            decls a bool field gets ``--x/--no-x``.
        parse: turns the option's text into the field's value (``"none"`` -> None, say); the
            option then takes text. Raise :class:`ConfigError` on bad text.

    Combine with :func:`bounds`: ``metadata=bounds(ge=1) | cli("prompts per forward")``.
    """
    return {"cli": CliOption(help, decls, parse)}


def flag(name: str) -> str:
    """The command-line flag of a config field: ``kl_max`` -> ``--kl-max``."""
    return "--" + name.replace("_", "-")


def choices(cls: type, name: str) -> tuple[Any, ...]:
    """The allowed values of a ``Literal`` field (empty when the field is not one)."""
    return _literal_args(typing.get_type_hints(cls)[name])


def _literal_args(tp: Any) -> tuple[Any, ...]:
    if get_origin(tp) is Literal:
        return get_args(tp)
    if get_origin(tp) in (Union, types.UnionType):
        out: tuple[Any, ...] = ()
        for arg in get_args(tp):
            out += _literal_args(arg)
        return out
    return ()


def _allows_none(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _check_bounds(name: str, value: Any, b: dict[str, float]) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"{name} must be a number, got {value!r}")
    ok = math.isfinite(float(value))
    ok &= all(
        {"gt": value > lim, "ge": value >= lim, "lt": value < lim, "le": value <= lim}[k]
        for k, lim in b.items()
    )
    if not ok:
        need = bounds_text(b)
        raise ConfigError(name, f"{name} must be a finite number {need}, got {value}")


def bounds_text(b: Mapping[str, float]) -> str:
    """``{"ge": 1, "le": 1024}`` -> ``">= 1 and <= 1024"`` (for messages and ``--help``)."""
    words = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return " and ".join(f"{words[k]} {lim:g}" for k, lim in b.items())


def check_values(cls: type, values: Mapping[str, Any]) -> None:
    """Check ``values`` (by field name) against the ``Literal`` types and ``bounds`` of the
    dataclass ``cls``; the CLI also runs this for configs that are not :class:`Checked`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        tp = hints.get(f.name)
        if value is None and _allows_none(tp):
            continue
        allowed = _literal_args(tp)
        if allowed and value not in allowed:
            opts = ", ".join(str(a) for a in allowed)
            raise ConfigError(f.name, f"{f.name} must be one of {opts}, got {value!r}")
        b = f.metadata.get("bounds")
        if b is not None:
            _check_bounds(f.name, value, b)


class Checked:
    """Mixin for frozen dataclass configs: validates ``Literal`` fields and ``bounds``."""

    def __post_init__(self) -> None:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        check_values(type(self), {f.name: getattr(self, f.name) for f in fields})
        self.check()

    def check(self) -> None:
        """Cross-field checks of a subclass (called after the per-field ones)."""
