"""One parser from a treatment written as JSON-like data to an :class:`Intervention`.

The same form serves ``steerlab generate``'s flags, the server's ``"steerlab"`` field and
files that name treatments::

    {"steer":  [{"direction": NAME, "layer": L, "coeff": C, "positions": "all"}],
     "ablate": [{"direction": NAME, "layer": ROW}],
     "clamp":  [{"direction": NAME, "layer": ROW, "value": X, "layers": "all"}]}

``steer`` adds ``C`` times the artifact's row for layer ``L`` at that layer (``layers``: a
range such as ``"8:12"`` or a list, each layer with its own row); ``ablate`` removes the
direction (its only row, or the row ``layer``) at every layer, several remove their span;
``clamp`` pins the projection on the row ``layer`` at every block input (``layers`` narrows
that). Treatments compose in that order: steer, ablate, clamp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..capture import resolve_layers
from ..directions.artifact import Direction
from ..errors import SteerlabError
from .base import Compose, Intervention, NoOp
from .treatments import Ablate, Clamp, Steer
from .vectors import basis_of, checked

__all__ = ["KEYS", "SpecError", "treatment_from_spec"]

KEYS = {
    "steer": {"direction", "layer", "layers", "coeff", "positions"},
    "ablate": {"direction", "layer"},
    "clamp": {"direction", "layer", "value", "layers"},
}


class SpecError(SteerlabError):
    """A treatment spec that does not parse, or does not fit the model."""


def _items(body: dict[str, Any], kind: str, where: str) -> list[dict[str, Any]]:
    raw = body.get(kind) or []
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise SpecError(f"{where}.{kind} must be a list of objects")
    for x in raw:
        extra = set(x) - KEYS[kind]
        if extra:
            raise SpecError(f"{where}.{kind}: unknown field(s) {sorted(extra)}")
        if not isinstance(x.get("direction"), str):
            raise SpecError(f"{where}.{kind}: each item needs a direction name (a string)")
    return raw


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"{what} must be an integer, got {v!r}")
    return v


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SpecError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def _layers(v: Any, n_layers: int, what: str) -> list[int]:
    if isinstance(v, bool) or not isinstance(v, (str, int, list)):
        raise SpecError(f"{what} must be all, L, A:B or a list of layers")
    if isinstance(v, list):
        v = [_int(x, what) for x in v]
    return resolve_layers(v, n_layers)


def _row(d: Direction, item: dict[str, Any], n_layers: int, what: str) -> int:
    """The artifact row an ablation or clamp uses: ``layer``, else its only one."""
    if item.get("layer") is None:
        if len(d.layers) != 1:
            raise SpecError(f"{what}: {item['direction']!r} has several layers; say which")
        return d.layers[0]
    return resolve_layers(_int(item["layer"], f"{what}.layer"), n_layers)[0]


def _steer(d: Direction, it: dict[str, Any], n_layers: int, width: int, what: str) -> Steer:
    if it.get("layers") is not None:
        lays = _layers(it["layers"], n_layers, f"{what}.layers")
    elif it.get("layer") is not None:
        lays = resolve_layers(_int(it["layer"], f"{what}.layer"), n_layers)
    elif len(d.layers) == 1:
        lays = [d.layers[0]]
    elif d.meta.get("apply_layers") == "all":  # a per-layer control vector: all its rows
        lays = list(d.layers)
    else:
        raise SpecError(f"{what}: {it['direction']!r} has several layers; give layer")
    c = _num(it.get("coeff", 1.0), f"{what}.coeff")
    pos = it.get("positions", "all")
    if pos not in ("all", "generated"):
        raise SpecError(f"{what}.positions must be all or generated, not {pos!r}")
    for lay in lays:  # width, finiteness, the row exists, and no overflow once scaled
        if not bool(torch.isfinite(c * checked(d.vector(lay), width)).all()):
            raise SpecError(f"{what}: coeff times the vector overflows")
    return Steer(d, layers=lays[0] if len(lays) == 1 else lays, coeff=c, positions=pos)


def treatment_from_spec(
    body: Any,
    directions: Callable[[str], Direction],
    *,
    n_layers: int,
    width: int,
    where: str = "steerlab",
) -> Intervention:
    """The intervention ``body`` describes (``NoOp`` for none), checked against the model.

    Args:
        directions: name -> :class:`Direction` (raises its own error for an unknown name).
        n_layers, width: the model's block count and residual width.
        where: how messages name the spec (``steerlab.steer[0].coeff must be ...``).

    Raises:
        SpecError: a malformed field, a layer out of range, a zero or dependent direction.
    """
    if body is None:
        return NoOp()
    if not isinstance(body, dict):
        raise SpecError(f"{where} must be an object with steer, ablate and clamp lists")
    extra = set(body) - set(KEYS)
    if extra:
        raise SpecError(f"{where}: unknown field(s) {sorted(extra)}; use steer, ablate, clamp")
    items: list[Intervention] = []
    for i, it in enumerate(_items(body, "steer", where)):
        what = f"{where}.steer[{i}]"
        items.append(_steer(directions(it["direction"]), it, n_layers, width, what))
    abl = _items(body, "ablate", where)
    if abl:
        ds = [directions(x["direction"]) for x in abl]
        rows = [
            _row(d, x, n_layers, f"{where}.ablate[{i}]")
            for i, (d, x) in enumerate(zip(ds, abl, strict=True))
        ]
        basis_of([checked(d.vector(r), width) for d, r in zip(ds, rows, strict=True)])
        items.append(Ablate(ds[0], layer=rows[0]) if len(ds) == 1 else Ablate(ds, layer=rows))
    for i, it in enumerate(_items(body, "clamp", where)):
        what = f"{where}.clamp[{i}]"
        d = directions(it["direction"])
        row = _row(d, it, n_layers, what)
        if "value" not in it:
            raise SpecError(f"{what} needs a value")
        v = _num(it["value"], f"{what}.value")
        lays = _layers(it.get("layers", "all"), n_layers, f"{what}.layers")
        basis_of([checked(d.vector(row), width)])  # a zero vector cannot be clamped
        items.append(Clamp(d, v, layers=lays, layer=row))
    if not items:
        return NoOp()
    return items[0] if len(items) == 1 else Compose(tuple(items))
