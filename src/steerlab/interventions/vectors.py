"""Vectors as interventions take them: checked (width, finiteness), made unit, and several
directions turned into an orthonormal basis of their span (Gram-Schmidt in float64)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..directions.artifact import Direction
from ..errors import VectorError

__all__ = [
    "DEPENDENT_TOL",
    "SpanLike",
    "VectorLike",
    "as_basis",
    "as_unit",
    "as_vector",
    "basis_of",
    "check_coeff",
    "checked",
    "model_width",
    "orthonormal_rows",
    "span_rows",
    "unit_of",
]

VectorLike = torch.Tensor | Direction
# One direction, or several whose span is removed: a (K, D) tensor, a sequence of (D,) tensors
# or Directions, or one Direction with ``layer=[l1, l2, ...]`` (its rows at those layers).
SpanLike = VectorLike | Sequence[VectorLike]
# A direction whose component orthogonal to the earlier ones is below this fraction of its
# norm is refused as dependent: float32 inputs carry ~1e-7 relative rounding, so a vector that
# is a float32 combination of the others leaves a residual far below it.
DEPENDENT_TOL = 1e-5


def model_width(model: nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[1])


def as_vector(model: nn.Module, vec: VectorLike, layer: int | None) -> torch.Tensor:
    """The (D,) float32 CPU vector for ``layer``, checked (width, finiteness)."""
    return checked(vec.vector(layer) if isinstance(vec, Direction) else vec, model_width(model))


def checked(v: Any, d: int) -> torch.Tensor:
    """``v`` as a (D,) float32 CPU vector of width ``d``, or a :class:`VectorError`."""
    if not isinstance(v, torch.Tensor):
        raise VectorError(f"expected a tensor or Direction, got {type(v).__name__}")
    if v.ndim != 1:
        raise VectorError(f"expected a (D,) vector, got shape {tuple(v.shape)}")
    if v.shape[0] != d:
        raise VectorError(f"vector width {v.shape[0]} does not match the model's width {d}")
    v = v.detach().float().cpu()
    if not torch.isfinite(v).all():
        raise VectorError("vector holds NaN or inf values")
    return v


def as_unit(model: nn.Module, vec: VectorLike, layer: int | None) -> torch.Tensor:
    """The unit vector in float64 on the CPU (placed and cast per hooked module)."""
    return unit_of(as_vector(model, vec, layer))


def unit_of(v: torch.Tensor) -> torch.Tensor:
    """A checked vector made unit, in float64."""
    v = v.double()
    n = v.norm()
    if n == 0:
        raise VectorError("cannot ablate or clamp along a zero vector")
    return v / n


def orthonormal_rows(
    vectors: torch.Tensor, *, tol: float = DEPENDENT_TOL, drop: bool = False
) -> tuple[torch.Tensor, list[int]]:
    """Orthonormal rows spanning ``vectors`` (K, D), in float64, first row = first vector's unit.

    Gram-Schmidt in the given order, each vector orthogonalized twice against the rows kept so
    far (twice is enough for orthogonality to working precision, Giraud et al. 2005): row ``i``
    of the result is the part of vector ``i`` that is new. Unlike QR, the first direction stays
    the first row, so a span led by one direction keeps that direction exactly.

    Args:
        vectors: (K, D) rows (any float dtype; computed in float64).
        tol: a vector whose new part is below ``tol`` times its norm is dependent.
        drop: leave dependent vectors out (and list them) instead of raising.

    Returns:
        (basis (K', D) float64, indices of the vectors left out as dependent).

    Raises:
        VectorError: a zero or dependent vector (unless ``drop``), or nothing left.
    """
    v = vectors.detach().double().cpu()
    rows: list[torch.Tensor] = []
    dropped: list[int] = []
    for i, x in enumerate(v):
        n = x.norm()
        if n == 0 and not drop:
            raise VectorError(f"direction {i} is a zero vector: it spans nothing")
        y = x.clone()
        for _ in range(2):
            for q in rows:
                y -= (y @ q) * q
        new = float(y.norm() / n) if n > 0 else 0.0
        if new <= tol:
            if drop:
                dropped.append(i)
                continue
            raise VectorError(
                f"direction {i} is (nearly) in the span of directions 0..{i - 1}: only "
                f"{new:.1e} of its norm is new (tolerance {tol:g}); drop it or pass "
                "independent directions"
            )
        rows.append(y / y.norm())
    if not rows:
        raise VectorError("no independent direction to span")
    return torch.stack(rows), dropped


def span_rows(directions: SpanLike, layer: int | Sequence[int] | None = None) -> list[Any]:
    """The vectors of a span argument, one per direction (unchecked; see :func:`as_basis`)."""
    if isinstance(directions, torch.Tensor) and directions.ndim == 2:
        if layer is not None:
            raise VectorError("layer= picks rows of a Direction; a (K, D) tensor has no layers")
        return list(directions)
    if isinstance(directions, (torch.Tensor, Direction)):
        if isinstance(layer, Sequence):
            if not isinstance(directions, Direction):
                raise VectorError("a list of layers picks rows of a Direction, not of a tensor")
            return [directions.vector(int(lay)) for lay in layer]
        return [directions.vector(layer) if isinstance(directions, Direction) else directions]
    items = list(directions)
    if not items:
        raise VectorError("no direction given")
    if isinstance(layer, Sequence):
        if len(layer) != len(items):
            raise VectorError(f"{len(items)} directions but {len(layer)} layers: give one each")
        layers: list[int | None] = [int(x) for x in layer]
    else:
        layers = [layer] * len(items)
    return [
        d.vector(lay) if isinstance(d, Direction) else d
        for d, lay in zip(items, layers, strict=True)
    ]


def as_basis(
    model: nn.Module,
    directions: SpanLike,
    layer: int | Sequence[int] | None = None,
    *,
    tol: float = DEPENDENT_TOL,
) -> torch.Tensor:
    """(K, D) float64 orthonormal rows spanning ``directions`` (see :func:`orthonormal_rows`).

    One direction gives ``as_unit(...)[None]``, bit for bit. ``layer``: the row of a multi-layer
    Direction (an int, applied to every Direction), or one layer per direction (a list; for a
    single Direction, the rows at those layers).

    Raises:
        VectorError: a bad width, NaN, a zero vector, or a dependent one.
    """
    d = model_width(model)
    return basis_of([checked(v, d) for v in span_rows(directions, layer)], tol=tol)


def basis_of(vecs: Sequence[torch.Tensor], *, tol: float = DEPENDENT_TOL) -> torch.Tensor:
    """(K, D) float64 orthonormal rows of checked vectors (one: its unit, bit for bit)."""
    if len(vecs) == 1:
        return unit_of(vecs[0]).unsqueeze(0)
    return orthonormal_rows(torch.stack(list(vecs)), tol=tol)[0]


def check_coeff(value: float, what: str = "the coefficient") -> float:
    """A finite float, or a :class:`VectorError` that says which number was bad."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise VectorError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise VectorError(f"{what} must be a finite number, got {value}")
    return x
