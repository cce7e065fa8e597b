"""Direction-based interventions as objects: Steer, Ablate, Clamp, Orthogonalize.

Each describes what it does as plain data (``ops()``, see :mod:`.ops`); the hook-applied ones
(Steer, SteerRows, Ablate, Clamp) are applied by the one executor
(:func:`~steerlab.interventions.execute.hooked`), Orthogonalize edits the weights in place and
restores them.

Example::

    from steerlab.interventions import Ablate, Steer, apply
    with apply(lm, [Steer(d, layers=12, coeff=4), Ablate(other)]) as treated:
        steerlab.generate(treated.model, treated.tokenizer, prompts)

Several directions: ``Ablate([d1, d2], layer=[10, 14])`` and ``Orthogonalize(...)`` remove their
span (orthonormalized, recorded in ``spec()``); ``steer_many([(v1, 10, 4.0), (v2, 14, -2.0)])``
adds several vectors at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..capture import Site
from ..directions.artifact import Direction
from ..errors import LayerError, VectorError
from ..models.load import LoadedModel
from .base import Compose, vector_spec
from .execute import hooked
from .ops import Op
from .vectors import (
    SpanLike,
    VectorLike,
    check_coeff,
    orthonormal_rows,
    span_rows,
)

__all__ = ["Ablate", "Clamp", "Steer", "SteerRows", "steer_many"]

Positions = Literal["all", "prompt", "generated"]


def _raw(v: Any) -> torch.Tensor:
    """A vector as ops keep it: float32 on the CPU, as given (checked when executed)."""
    if not isinstance(v, torch.Tensor):
        raise VectorError(f"expected a tensor or Direction, got {type(v).__name__}")
    return v.detach().float().cpu()


class _Hooked:
    """Applied by the one executor: hooks for its ops while the context is open."""

    def ops(self) -> list[Op]:
        raise NotImplementedError

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        with hooked(lm.model, self.ops(), adapter=lm.adapter):
            yield lm


@dataclass(frozen=True, eq=False)  # tensor fields: identity, not elementwise ==
class Steer(_Hooked):
    """Add ``coeff * vector`` at ``layers`` (ActAdd / CAA); see :func:`~steerlab.steer`.

    ``positions``: ``all`` tokens, only the ``prompt``'s own forward, or only ``generated``
    tokens (decode steps)."""

    vector: VectorLike
    layers: int | Sequence[int] | str | None = None
    coeff: float = 1.0
    positions: Positions = "all"
    site: Site | None = None
    name: str = "steer"

    def __post_init__(self) -> None:
        check_coeff(self.coeff)
        if self.positions not in ("all", "prompt", "generated"):
            raise ValueError(
                f"positions must be 'all', 'prompt' or 'generated', not {self.positions!r}"
            )
        if self._site() not in ("resid_pre", "resid_post"):
            raise ValueError(f"site must be 'resid_pre' or 'resid_post', not {self._site()!r}")

    def _site(self) -> str:
        if self.site:
            return str(self.site)
        return str(self.vector.site) if isinstance(self.vector, Direction) else "resid_pre"

    def _layers(self) -> int | list[int] | str:
        vec, layers = self.vector, self.layers
        if layers is None:
            if isinstance(vec, Direction) and len(vec.layers) == 1:
                return vec.layers[0]
            if isinstance(vec, Direction) and vec.meta.get("apply_layers") == "all":
                return list(vec.layers)  # a per-layer control vector (GGUF import): all its rows
            raise LayerError("say at which layer(s) to steer (layers=...)")
        if isinstance(layers, (int, str)):
            return layers
        return [int(x) for x in layers]

    def ops(self) -> list[Op]:
        vec = self.vector
        v: Any = (
            {lay: _raw(vec.vector(lay)) for lay in vec.layers}
            if isinstance(vec, Direction)
            else _raw(vec)
        )
        return [
            {
                "kind": "add",
                "vector": v,
                "layers": self._layers(),
                "coeff": float(self.coeff),
                "site": self._site(),
                "positions": self.positions,
            }
        ]

    def spec(self) -> dict[str, Any]:
        layers = self.layers if not isinstance(self.layers, tuple) else list(self.layers)
        return {
            "kind": "steer",
            "layers": layers,
            "coeff": self.coeff,
            "positions": self.positions,
            "site": self._site(),
            "vector": vector_spec(
                self.vector, self.layers if isinstance(self.layers, int) else None
            ),
        }


SteerTerm = tuple[Any, ...] | Steer  # (vector, layers) or (vector, layers, coeff), or a Steer


def steer_many(
    terms: Iterable[SteerTerm],
    *,
    positions: Positions = "all",
    site: Site | None = None,
    name: str = "steer_many",
) -> Compose:
    """Several additions at once: ``[(vector, layers, coeff), ...]`` (coeff defaults to 1).

    Each term is a :class:`Steer`; they are entered in order, so two terms at the same layer
    add ``c1 * v1`` then ``c2 * v2`` (the same as their sum, up to float rounding), and terms
    at different layers compose like nested :func:`~steerlab.steer` contexts.

    Example:
        >>> with apply(lm, steer_many([(d1, 10, 4.0), (d2, 14, -2.0)])) as m:  # doctest: +SKIP
        ...     steerlab.generate(m.model, m.tokenizer, prompts)
    """
    items: list[Steer] = []
    for i, t in enumerate(terms):
        if isinstance(t, Steer):
            items.append(t)
            continue
        if not isinstance(t, tuple) or len(t) not in (2, 3):
            raise VectorError(f"steer term {i} must be (vector, layers[, coeff]), got {t!r}")
        coeff = check_coeff(t[2] if len(t) == 3 else 1.0, f"the coefficient of steer term {i}")
        items.append(Steer(t[0], layers=t[1], coeff=coeff, positions=positions, site=site))
    if not items:
        raise VectorError("steer_many needs at least one (vector, layers, coeff) term")
    return Compose(tuple(items), name=name)


def _single(direction: SpanLike, layer: int | Sequence[int] | None) -> bool:
    """One direction given the one-direction way (its spec and records stay as they were)."""
    if isinstance(direction, torch.Tensor):
        return direction.ndim != 2
    return isinstance(direction, Direction) and not isinstance(layer, Sequence)


def _span_spec(kind: str, direction: SpanLike, layer: int | Sequence[int] | None) -> dict:
    if _single(direction, layer):
        return {"kind": kind, "layer": layer, "vector": vector_spec(direction, layer)}  # type: ignore[arg-type]
    rows = [r.detach().float().cpu() for r in span_rows(direction, layer)]
    basis = _check_span(rows)
    return {
        "kind": kind,
        "layer": list(layer) if isinstance(layer, Sequence) else layer,
        "k": len(rows),
        "vector": vector_spec(rows[0]),  # the first direction: the basis's first row
        "vectors": [vector_spec(r) for r in rows],
        "basis": vector_spec(basis.float()),
    }


def _check_span(rows: list[torch.Tensor]) -> torch.Tensor:
    if len({tuple(r.shape) for r in rows}) != 1 or rows[0].ndim != 1:
        raise VectorError(f"directions of different shapes: {[tuple(r.shape) for r in rows]}")
    if not all(torch.isfinite(r).all() for r in rows):
        raise VectorError("a direction holds NaN or inf values")
    return orthonormal_rows(torch.stack(rows))[0]


def _span_vectors(direction: SpanLike, layer: int | Sequence[int] | None) -> torch.Tensor:
    """(K, D) float32 rows of a span argument, as given (orthonormalized when executed)."""
    rows = [_raw(r) for r in span_rows(direction, layer)]
    if len({tuple(r.shape) for r in rows}) != 1 or rows[0].ndim != 1:
        raise VectorError(f"directions of different shapes: {[tuple(r.shape) for r in rows]}")
    return torch.stack(rows)


@dataclass(frozen=True, eq=False)
class SteerRows(_Hooked):
    """Add ``deltas[i]`` to batch row ``i`` at the input of block ``layer`` (one row: added to
    every row), so several vectors share one forward (MELBO's completions)."""

    deltas: torch.Tensor  # (rows, D)
    layer: int
    name: str = "steer_rows"

    def __post_init__(self) -> None:
        if self.deltas.ndim != 2:
            raise VectorError(f"expected (rows, D) deltas, got {tuple(self.deltas.shape)}")
        if not torch.isfinite(self.deltas).all():
            raise VectorError("steering rows hold NaN or inf values")

    def ops(self) -> list[Op]:
        rows = [Steer(d, layers=self.layer).ops() for d in self.deltas]
        return rows[0] if len(rows) == 1 else [{"kind": "rows", "rows": rows}]

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "steer_rows",
            "layer": self.layer,
            "rows": int(self.deltas.shape[0]),
            "vector": vector_spec(self.deltas),
        }


@dataclass(frozen=True, eq=False)
class Ablate(_Hooked):
    """Remove a direction from the residual stream at every layer; see :func:`~steerlab.ablate`.

    Several directions (a (K, D) tensor, a list, ``layer=[...]``) remove their span; they are
    orthonormalized in order and a zero or dependent one is refused when built. ``spec()``
    then records ``k``, each direction and the basis.

    Args:
        layer: which row of a multi-layer Direction (see :func:`~steerlab.ablate`).
        layers: where: ``"all"`` blocks (default) or a list of block indices.
        writes: also remove it from what attention and MLP write into the residual (default);
            False: from the blocks' inputs only (e.g. a necessity map, one layer at a time).
    """

    direction: SpanLike
    layer: int | Sequence[int] | None = None
    layers: str | Sequence[int] = "all"
    writes: bool = True
    name: str = "ablate"

    def __post_init__(self) -> None:
        if not _single(self.direction, self.layer):
            self.spec()  # refuses zero, dependent, NaN or mismatched directions now

    def ops(self) -> list[Op]:
        layers = self.layers if isinstance(self.layers, str) else [int(x) for x in self.layers]
        return [
            {
                "kind": "ablate",
                "vectors": _span_vectors(self.direction, self.layer),
                "layers": layers,
                "writes": bool(self.writes),
            }
        ]

    def spec(self) -> dict[str, Any]:
        out = _span_spec("ablate", self.direction, self.layer)
        if self.layers != "all" or not self.writes:
            out |= {"at": self.layers if isinstance(self.layers, str) else list(self.layers)}
            out |= {"writes": self.writes}
        return out


@dataclass(frozen=True, eq=False)
class Clamp(_Hooked):
    """Pin the projection on a direction to ``value`` at ``layers``; see :func:`~steerlab.clamp`."""

    direction: VectorLike
    value: float
    layers: int | Sequence[int] | str | None = "all"
    layer: int | None = None
    name: str = "clamp"

    def __post_init__(self) -> None:
        check_coeff(self.value, "the clamp value")

    def ops(self) -> list[Op]:
        d = self.direction
        v = d.vector(self.layer) if isinstance(d, Direction) else d
        layers = self.layers
        if layers is None:
            layers = "all"
        elif not isinstance(layers, (int, str)):
            layers = [int(x) for x in layers]
        return [{"kind": "clamp", "vector": _raw(v), "value": float(self.value), "layers": layers}]

    def spec(self) -> dict[str, Any]:
        layers = self.layers if not isinstance(self.layers, tuple) else list(self.layers)
        return {
            "kind": "clamp",
            "value": self.value,
            "layers": layers,
            "layer": self.layer,
            "vector": vector_spec(self.direction, self.layer),
        }
