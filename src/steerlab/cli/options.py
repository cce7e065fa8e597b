"""Command-line options read from config dataclasses: each option is declared once, on its
field (:func:`steerlab.configs.cli`), as TRL's parser reads its options from dataclasses.

:func:`option_params` turns the ``cli`` fields of configs into typer parameters: flag, type,
default, choices, bounds and help all come from the field. :func:`given` reads back only the
options the user typed, so a config built from them keeps its own defaults for the rest, and a
preset such as ``--quick`` can fill what was left out (typer's default is only displayed).
Bounds are checked by the config, not by click, so a bad value ends in one ``error:`` line that
names the flag, like every other bad input.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer

from ..configs import Checked, CliOption, bounds_text, check_values, choices, flag

__all__ = ["Given", "OptionField", "given", "option_fields", "option_params"]

Presets = Mapping[str, Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class OptionField:
    """One config field that is a command-line option."""

    cls: type
    name: str
    spec: CliOption
    default: Any
    type: Any  # what typer parses: bool, int, float, str, list[str], or one of them | None

    @property
    def flag(self) -> str:
        """The flag the user types (what error messages say)."""
        return self.spec.decls[0] if self.spec.decls else flag(self.name)

    @property
    def switch(self) -> bool | None:
        """A one-flag bool option: the value its flag sets (``--no-x``: False). Else None."""
        if self.type is not bool or not self.spec.decls:
            return None
        return not self.spec.decls[0].startswith("--no-")

    @property
    def cli_default(self) -> Any:
        """The field's default as the option shows it: tuples as comma lists (what the
        option's text parses back to), switches off."""
        v = self.default
        if self.switch is not None:
            return False
        if get_origin(self.type) is list:
            return list(v)
        if isinstance(v, tuple):
            return ",".join(str(x) for x in v)
        if v is not None and _base(self.type) is str and not isinstance(v, str):
            return str(v)
        return v


def _base(tp: Any) -> Any:
    args = [a for a in get_args(tp) if a is not type(None)]
    return args[0] if get_origin(tp) in (Union, types.UnionType) else tp


def _option_type(tp: Any, spec: CliOption, default: Any) -> Any:
    union = get_origin(tp) in (Union, types.UnionType)
    members = [m for m in (get_args(tp) if union else (tp,)) if m is not type(None)]
    tuples = [m for m in members if get_origin(m) is tuple]
    if members == [bool]:
        return bool
    if tuples and len(tuples) == len(members):  # tuple[str, ...] only: a repeatable option
        base: Any = list[get_args(tuples[0])[0]]  # type: ignore[misc]
    elif spec.parse or tuples or any(m is str or get_origin(m) is Literal for m in members):
        base = str  # comma lists, closed sets and words like auto/none are text
    else:
        base = members[0]
    return base | None if default is None else base


def option_fields(*classes: type) -> list[OptionField]:
    """The ``cli`` fields of the config dataclasses, in field order."""
    out = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            spec = f.metadata.get("cli")
            if spec is None:
                continue
            missing = f.default is dataclasses.MISSING
            default = f.default_factory() if missing else f.default  # type: ignore[misc]
            tp = _option_type(hints[f.name], spec, default)
            out.append(OptionField(cls, f.name, spec, default, tp))
    names = [o.name for o in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TypeError(f"options declared by more than one config: {sorted(dup)}")
    return out


def _help(o: OptionField, presets: Presets) -> str:
    text = o.spec.help
    allowed = choices(o.cls, o.name)
    if allowed:
        text += ": " + " | ".join(map(str, allowed))
    b = next(f for f in dataclasses.fields(o.cls) if f.name == o.name).metadata.get("bounds")
    if b:
        text += f" ({bounds_text(b)})"
    for preset_flag, preset in presets.items():
        if o.name in preset:
            v = preset[o.name]
            shown = ",".join(map(str, v)) if isinstance(v, tuple) else v
            text += f"; {preset_flag}: {shown}"
    return text


def option_params(
    fields: Sequence[OptionField], presets: Presets | None = None
) -> list[inspect.Parameter]:
    """Typer parameters (keyword-only, annotated) for ``fields``.

    Args:
        fields: from :func:`option_fields`.
        presets: ``{"--quick": QUICK}``: each preset's value is named in the help of its fields.
    """
    params = []
    for o in fields:
        info = typer.Option(
            *o.spec.decls, help=_help(o, presets or {}), show_default=o.switch is None
        )
        params.append(
            inspect.Parameter(
                o.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=o.cli_default,
                annotation=Annotated[o.type, info],
            )
        )
    return params


class Given:
    """The config values the user typed, by config class (see :func:`given`)."""

    def __init__(self, values: Mapping[type, Mapping[str, Any]]) -> None:
        self.values = {cls: dict(v) for cls, v in values.items()}

    def __getitem__(self, cls: type) -> dict[str, Any]:
        return dict(self.values.get(cls, {}))

    def build(self, cls: type, **base: Any) -> Any:
        """``cls`` from ``base`` (a preset, values the command sets) overridden by what was
        typed; fields in neither keep the dataclass defaults, which the options showed."""
        return cls(**{**base, **self.values.get(cls, {})})


def given(ctx: typer.Context, fields: Sequence[OptionField], kwargs: dict[str, Any]) -> Given:
    """Pop the options of ``fields`` from ``kwargs``; keep those given on the command line (or
    from the environment), parsed and checked against their fields.

    Raises:
        ConfigError: text a field's ``parse`` refuses, a value out of its bounds or choices.
    """
    values: dict[type, dict[str, Any]] = {o.cls: {} for o in fields}
    for o in fields:
        raw = kwargs.pop(o.name)
        source = ctx.get_parameter_source(o.name)
        if source is None or source.name == "DEFAULT":
            continue
        if o.switch is not None:
            value: Any = o.switch
        elif o.spec.parse is not None:
            value = o.spec.parse(raw)
        else:
            value = tuple(raw) if isinstance(raw, list) else raw
        values[o.cls][o.name] = value
    for cls, vals in values.items():
        if not issubclass(cls, Checked):  # a Checked config checks itself when built
            check_values(cls, vals)
    return Given(values)
