"""Reversible interventions on a bare model: context managers that hook the stock model and
leave it untouched.

* :func:`steer` adds ``coeff * v`` to the residual stream at chosen layers (ActAdd / CAA).
* :func:`ablate` removes a direction (or the span of several, :func:`as_basis`) everywhere it
  can be written: the input of every block and the outputs of every attention and MLP sublayer
  (Arditi et al. 2024).
* :func:`clamp` sets the projection on a direction to a fixed value at chosen layers.

Each builds the ops of the matching :class:`~steerlab.interventions.Intervention` and hooks them
with :func:`~steerlab.interventions.execute.hooked`, the one executor on Hugging Face models.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from ..capture import Site
from ..models.adapter import ModelAdapter
from .execute import hooked
from .vectors import (
    DEPENDENT_TOL,
    SpanLike,
    VectorLike,
    as_basis,
    as_unit,
    as_vector,
    check_coeff,
    orthonormal_rows,
    span_rows,
)

__all__ = [
    "DEPENDENT_TOL",
    "ablate",
    "as_basis",
    "as_unit",
    "as_vector",
    "check_coeff",
    "clamp",
    "orthonormal_rows",
    "span_rows",
    "steer",
    "steer_rows",
]

Positions = Literal["all", "prompt", "generated"]


@contextmanager
def steer(
    model: nn.Module,
    vector: VectorLike,
    *,
    layers: int | Sequence[int] | str | None = None,
    coeff: float = 1.0,
    positions: Positions = "all",
    site: Site | None = None,
    adapter: ModelAdapter | None = None,
) -> Iterator[None]:
    """Add ``coeff * vector`` to the residual stream while the context is open.

    Args:
        model: a stock HF causal LM.
        vector: a (D,) tensor, or a :class:`Direction` (its row for each layer is used).
        layers: block indices; defaults to the Direction's only layer.
        coeff: multiplier (finite).
        positions: ``all`` tokens, only the ``prompt``'s own forward, or only ``generated``
            ones (decode steps: one new token after a filled KV cache).
        site: ``resid_pre`` (input of block l, default) or ``resid_post`` (its output); defaults
            to the Direction's site.

    Example:
        >>> with steer(model, direction, layers=10, coeff=4.0):  # doctest: +SKIP
        ...     out = model.generate(**inputs)
    """
    from .treatments import Steer

    ops = Steer(vector, layers=layers, coeff=coeff, positions=positions, site=site).ops()
    with hooked(model, ops, adapter=adapter):
        yield


@contextmanager
def steer_rows(
    model: nn.Module,
    deltas: torch.Tensor,
    *,
    layer: int,
    adapter: ModelAdapter | None = None,
) -> Iterator[None]:
    """Add ``deltas[i]`` to row ``i`` of ``resid_pre[layer]`` (one row: added to every row).

    :func:`steer` with one vector per batch row, so several vectors share one forward or one
    ``generate`` call (MELBO's completions). Rows must match the batch: a batch of another
    size is an error, not a guess.
    """
    from .treatments import SteerRows

    with hooked(model, SteerRows(deltas, layer=layer).ops(), adapter=adapter):
        yield


@contextmanager
def ablate(
    model: nn.Module,
    direction: SpanLike,
    *,
    layer: int | Sequence[int] | None = None,
    adapter: ModelAdapter | None = None,
) -> Iterator[None]:
    """Project ``direction`` out of the residual stream at every layer (directional ablation).

    Hooks: the input of every block, and the output of every attention and MLP sublayer as it
    is written to the residual (for sandwich-norm models, after the post-norm). The residual
    then never carries the direction, which is what :func:`orthogonalize` bakes into weights.

    Several directions remove their span: ``h <- h - Q^T (Q h)`` with ``Q`` (K, D) their
    orthonormalized rows (:func:`as_basis`; a dependent or zero one is refused).

    Args:
        direction: a (D,) tensor or a :class:`Direction`; normalized here. Or several: a (K, D)
            tensor, a list of tensors / Directions.
        layer: which row of a multi-layer Direction to use; a list gives one row per direction
            (or, for a single Direction, its rows at those layers).

    Example:
        >>> with ablate(model, [d1, d2], layer=[10, 14]):  # doctest: +SKIP
        ...     out = model.generate(**inputs)
    """
    from .treatments import Ablate

    as_basis(model, direction, layer)  # the model's width is checked before the span
    with hooked(model, Ablate(direction, layer=layer).ops(), adapter=adapter):
        yield


@contextmanager
def clamp(
    model: nn.Module,
    direction: VectorLike,
    value: float,
    *,
    layers: int | Sequence[int] | str | None = "all",
    layer: int | None = None,
    adapter: ModelAdapter | None = None,
) -> Iterator[None]:
    """Set the projection of the residual on ``direction`` to ``value`` at the input of ``layers``.

    ``x <- x + (value - x . r) r`` with ``r`` the unit direction: every component orthogonal to
    ``r`` is kept, only the coordinate along ``r`` is pinned (e.g. to its mean on harmful prompts).

    Args:
        value: target projection (in the residual's units).
        layers: blocks whose input is clamped (default: all).
        layer: which row of a multi-layer Direction gives ``r``.
    """
    from .treatments import Clamp

    with hooked(model, Clamp(direction, value, layers=layers, layer=layer).ops(), adapter=adapter):
        yield
