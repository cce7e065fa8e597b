"""Reversible interventions: context managers that hook the stock model and leave it untouched.

* :func:`steer` adds ``coeff * v`` to the residual stream at chosen layers (ActAdd / CAA).
* :func:`ablate` removes a direction everywhere it can be written: the input of every block
  and the outputs of every attention and MLP sublayer (Arditi et al. 2024).
* :func:`clamp` sets the projection on a direction to a fixed value at chosen layers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from ..capture import Site, resolve_layers
from ..directions.artifact import Direction
from ..errors import LayerError, VectorError
from ..hooks import scoped_hooks
from ..models.adapter import ModelAdapter, blocks_of, get_adapter

__all__ = ["ablate", "clamp", "steer"]

VectorLike = torch.Tensor | Direction
Positions = Literal["all", "generated"]


def _model_width(model: nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[1])


def as_vector(model: nn.Module, vec: VectorLike, layer: int | None) -> torch.Tensor:
    """The (D,) vector for ``layer``, checked (width, finiteness) and on the model's device."""
    v = vec.vector(layer) if isinstance(vec, Direction) else vec
    if not isinstance(v, torch.Tensor):
        raise VectorError(f"expected a tensor or Direction, got {type(vec).__name__}")
    if v.ndim != 1:
        raise VectorError(f"expected a (D,) vector, got shape {tuple(v.shape)}")
    d = _model_width(model)
    if v.shape[0] != d:
        raise VectorError(f"vector width {v.shape[0]} does not match the model's width {d}")
    if not torch.isfinite(v).all():
        raise VectorError("vector holds NaN or inf values")
    p = next(model.parameters())
    return v.detach().to(device=p.device, dtype=p.dtype)


def as_unit(model: nn.Module, vec: VectorLike, layer: int | None) -> torch.Tensor:
    """The unit vector in float64 (callers cast it to the activations' dtype)."""
    v = as_vector(model, vec, layer).double()
    n = v.norm()
    if n == 0:
        raise VectorError("cannot ablate or clamp along a zero vector")
    return v / n


def _default_layers(vec: VectorLike, layers: int | Sequence[int] | str | None, n: int) -> list[int]:
    if layers is None:
        if isinstance(vec, Direction) and len(vec.layers) == 1:
            return [vec.layers[0]]
        raise LayerError("say at which layer(s) to steer (layers=...)")
    return resolve_layers(layers, n)


def _is_decode_step(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    cache = kwargs.get("past_key_values")
    if cache is None:
        return False
    try:
        return int(cache.get_seq_length()) > 0
    except (AttributeError, TypeError):
        return False


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
        coeff: multiplier.
        positions: ``all`` tokens, or only ``generated`` ones (decode steps with a KV cache;
            the prompt's own forward is left alone).
        site: ``resid_pre`` (input of block l, default) or ``resid_post`` (its output); defaults
            to the Direction's site.

    Example:
        >>> with steer(model, direction, layers=10, coeff=4.0):  # doctest: +SKIP
        ...     out = model.generate(**inputs)
    """
    ad = adapter or get_adapter(model)
    blocks = blocks_of(model, ad)
    site = site or (vector.site if isinstance(vector, Direction) else "resid_pre")  # type: ignore[assignment]
    chosen = _default_layers(vector, layers, len(blocks))
    deltas = {lay: coeff * as_vector(model, vector, lay) for lay in chosen}
    state = {"active": positions == "all"}

    def make(delta: torch.Tensor) -> Any:
        def fn(h: torch.Tensor) -> torch.Tensor | None:
            return h + delta.to(h.dtype) if state["active"] else None

        return fn

    with scoped_hooks() as hs:
        if positions == "generated":

            def gate(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                state["active"] = _is_decode_step(args, kwargs)

            hs.raw_pre(model, gate)
        elif positions != "all":
            raise ValueError(f"positions must be 'all' or 'generated', not {positions!r}")
        for lay, delta in deltas.items():
            (hs.pre if site == "resid_pre" else hs.post)(blocks[lay], make(delta))
        yield


def _remove(r: torch.Tensor) -> Any:
    # Divide by r.r in the activations' dtype so the projector is idempotent even though the
    # cast unit vector is not exactly unit: hooks apply it several times per forward.
    def fn(h: torch.Tensor) -> torch.Tensor:
        rr = r.to(h.dtype)
        return h - ((h @ rr) / (rr @ rr)).unsqueeze(-1) * rr

    return fn


@contextmanager
def ablate(
    model: nn.Module,
    direction: VectorLike,
    *,
    layer: int | None = None,
    adapter: ModelAdapter | None = None,
) -> Iterator[None]:
    """Project ``direction`` out of the residual stream at every layer (directional ablation).

    Hooks: the input of every block, and the output of every attention and MLP sublayer as it
    is written to the residual (for sandwich-norm models, after the post-norm). The residual
    then never carries the direction, which is what :func:`orthogonalize` bakes into weights.

    Args:
        direction: a (D,) tensor or a :class:`Direction`; normalized here.
        layer: which row of a multi-layer Direction to use.
    """
    ad = adapter or get_adapter(model)
    r = as_unit(model, direction, layer)
    fn = _remove(r)
    with scoped_hooks() as hs:
        for block in blocks_of(model, ad):
            hs.pre(block, fn)
            hs.post(block.get_submodule(ad.attn_write), fn)
            hs.post(block.get_submodule(ad.mlp_write), fn)
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
    ad = adapter or get_adapter(model)
    blocks = blocks_of(model, ad)
    r = as_unit(model, direction, layer)
    chosen = resolve_layers(layers, len(blocks))

    def fn(h: torch.Tensor) -> torch.Tensor:
        rr = r.to(h.dtype)
        return h + ((value - h @ rr) / (rr @ rr)).unsqueeze(-1) * rr

    with scoped_hooks() as hs:
        for lay in chosen:
            hs.pre(blocks[lay], fn)
        yield
