"""Reversible interventions: context managers that hook the stock model and leave it untouched.

* :func:`steer` adds ``coeff * v`` to the residual stream at chosen layers (ActAdd / CAA).
* :func:`ablate` removes a direction (or the span of several, :func:`as_basis`) everywhere it
  can be written: the input of every block and the outputs of every attention and MLP sublayer
  (Arditi et al. 2024).
* :func:`clamp` sets the projection on a direction to a fixed value at chosen layers.

Vectors are checked once (width, finiteness) and placed on each hooked module's own device and
dtype when the hook is registered, so a model spread over several devices (``device_map``)
needs no copy per forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from ..capture import Site, resolve_layers
from ..directions.artifact import Direction
from ..errors import LayerError, VectorError
from ..hooks import placed, scoped_hooks
from ..models.adapter import ModelAdapter, blocks_of, get_adapter
from ..models.compat import is_decode_step
from .record import recorded
from .vectors import (
    DEPENDENT_TOL,
    SpanLike,
    VectorLike,
    as_basis,
    as_unit,
    as_vector,
    check_coeff,
    model_width,
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

Positions = Literal["all", "generated"]


def _default_layers(vec: VectorLike, layers: int | Sequence[int] | str | None, n: int) -> list[int]:
    if layers is None:
        if isinstance(vec, Direction) and len(vec.layers) == 1:
            return [vec.layers[0]]
        if isinstance(vec, Direction) and vec.meta.get("apply_layers") == "all":
            return list(vec.layers)  # a per-layer control vector (GGUF import): all its rows
        raise LayerError("say at which layer(s) to steer (layers=...)")
    return resolve_layers(layers, n)


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
        positions: ``all`` tokens, or only ``generated`` ones (decode steps: one new token after
            a filled KV cache; the prompt's own forward is left alone).
        site: ``resid_pre`` (input of block l, default) or ``resid_post`` (its output); defaults
            to the Direction's site.

    Example:
        >>> with steer(model, direction, layers=10, coeff=4.0):  # doctest: +SKIP
        ...     out = model.generate(**inputs)
    """
    if positions not in ("all", "generated"):
        raise ValueError(f"positions must be 'all' or 'generated', not {positions!r}")
    coeff = check_coeff(coeff)
    ad = adapter or get_adapter(model)
    blocks = blocks_of(model, ad)
    site = site or (vector.site if isinstance(vector, Direction) else "resid_pre")  # type: ignore[assignment]
    if site not in ("resid_pre", "resid_post"):
        raise ValueError(f"site must be 'resid_pre' or 'resid_post', not {site!r}")
    chosen = _default_layers(vector, layers, len(blocks))
    deltas = {lay: coeff * as_vector(model, vector, lay) for lay in chosen}
    state = {"active": positions == "all"}

    def make(delta: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor | None]:
        def fn(h: torch.Tensor) -> torch.Tensor | None:
            # .to() is free when the device and dtype already match (placed at registration).
            return h + delta.to(h.device, h.dtype) if state["active"] else None

        return fn

    with scoped_hooks() as hs:
        if positions == "generated":

            def gate(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                state["active"] = is_decode_step(args, kwargs)

            hs.raw_pre(model, gate)
        for lay, delta in deltas.items():
            block = blocks[lay]
            (hs.pre if site == "resid_pre" else hs.post)(block, make(placed(delta, block)))
        op = {
            "kind": "add",
            "deltas": {lay: d.detach().float().cpu() for lay, d in deltas.items()},
            "site": site,
            "positions": positions,
        }
        with recorded(model, op):
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
    ``generate`` call (MELBO's completions, a server batching requests with different
    steering). Rows must match the batch: a batch of another size is an error, not a guess.
    """
    ad = adapter or get_adapter(model)
    if deltas.ndim != 2 or deltas.shape[1] != model_width(model):
        raise VectorError(
            f"expected (rows, {model_width(model)}) deltas, got {tuple(deltas.shape)}"
        )
    if not torch.isfinite(deltas).all():
        raise VectorError("steering rows hold NaN or inf values")
    block = blocks_of(model, ad)[resolve_layers(layer, len(blocks_of(model, ad)))[0]]
    d = placed(deltas.float(), block)  # (N, D)

    def fn(h: torch.Tensor) -> torch.Tensor:  # (N, T, D)
        if d.shape[0] not in (1, h.shape[0]):
            # A batch of 1 under several rows is the shared-prefix forward of
            # steerlab.prefix: one prefix for every row cannot carry per-row steering.
            hint = (
                " (per-row steering cannot share a prefix cache: pass prefix=False / "
                "prefix_cache=False)"
                if h.shape[0] == 1
                else ""
            )
            raise VectorError(f"{d.shape[0]} steering rows for a batch of {h.shape[0]}{hint}")
        return h + d.to(h.device, h.dtype)[:, None, :]

    with scoped_hooks() as hs, recorded(model, {"kind": "steer_rows"}):
        hs.pre(block, fn)
        yield


def _remove(r: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    # Divide by r.r in the activations' dtype so the projector is idempotent even though the
    # cast unit vector is not exactly unit: hooks apply it several times per forward.
    def fn(h: torch.Tensor) -> torch.Tensor:
        rr = r.to(h.device, h.dtype)
        return h - ((h @ rr) / (rr @ rr)).unsqueeze(-1) * rr

    return fn


def _remove_span(q: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """h <- h - c(h) Q with Q (K, D) as placed; c = h Q^T (Q Q^T)^-1, so the projector is
    idempotent for the cast rows too (the K > 1 analogue of dividing by r.r)."""
    qd = q.double()
    coef = torch.linalg.solve(qd @ qd.T, qd).to(q.dtype)  # (K, D): (Q Q^T)^-1 Q

    def fn(h: torch.Tensor) -> torch.Tensor:
        qq, cc = q.to(h.device, h.dtype), coef.to(h.device, h.dtype)
        return h - (h @ cc.T) @ qq

    return fn


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
    ad = adapter or get_adapter(model)
    basis = as_basis(model, direction, layer)  # (K, D) float64
    k = basis.shape[0]
    make = _remove if k == 1 else _remove_span
    r = basis[0] if k == 1 else basis  # K = 1: the (D,) path of before, bit for bit
    with scoped_hooks() as hs:
        for block in blocks_of(model, ad):
            for mod, kind in (
                (block, hs.pre),
                (block.get_submodule(ad.attn_write), hs.post),
                (block.get_submodule(ad.mlp_write), hs.post),
            ):
                kind(mod, make(placed(r, mod)))
        if k == 1:
            op: dict[str, Any] = {"kind": "ablate", "unit": r.detach().float().cpu()}
        else:  # orthonormal rows: an engine may remove them one after the other
            op = {"kind": "ablate", "basis": basis.float(), "k": k}
        with recorded(model, op):
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
    value = check_coeff(value, "the clamp value")
    ad = adapter or get_adapter(model)
    blocks = blocks_of(model, ad)
    r = as_unit(model, direction, layer)
    chosen = resolve_layers(layers, len(blocks))

    def make(rp: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(h: torch.Tensor) -> torch.Tensor:
            rr = rp.to(h.device, h.dtype)
            return h + ((value - h @ rr) / (rr @ rr)).unsqueeze(-1) * rr

        return fn

    with scoped_hooks() as hs:
        for lay in chosen:
            hs.pre(blocks[lay], make(placed(r, blocks[lay])))
        op = {"kind": "clamp", "unit": r.detach().float().cpu(), "value": value, "layers": chosen}
        with recorded(model, op):
            yield
