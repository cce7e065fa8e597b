"""Permanent edit: weight orthogonalization ("abliteration").

Every weight that writes into the residual stream (token and position embeddings, attention
and MLP output projections, and their biases) is projected so that its output has no
component along ``r``: ``W <- (I - r r^T) W``. For architectures whose sublayers write
directly into the residual (llama, qwen2, mistral, phi3, gpt2, gpt_neox, gemma 1) the edited
model computes exactly what runtime :func:`~steerlab.interventions.ablate` computes.

Sandwich-norm models (Gemma 2/3) pass each projection's output through a norm with gain ``g``
before the residual add. Projecting the weight against ``u = g * r / |g * r|`` makes
``r . (g * x / rms(x)) = 0`` for every ``x``: the direction is removed exactly, but the norm's
scale changes, so the result is *not* identical to runtime ablation.

Several directions (a span with orthonormal rows ``Q`` (K, D), :func:`~steerlab.interventions.
runtime.as_basis`): ``W <- (I - Q^T Q) W``, which equals runtime ablation of the span exactly
like the one-direction case. Sandwich norms: the output projections are edited against the
span of ``g * q_i``, orthonormalized again; then ``q_i . (g * x / rms(x)) = 0`` for every ``i``
and ``x``: exact removal of the span, not equivalence, as for one direction.

Memory: matrices are edited in place, a block of rows at a time (the rank-1 coefficients
``u^T W`` accumulate in float64; they are one vector per matrix). Peak memory is the model plus
one block, instead of a float64 copy of the largest matrix (a 128k x 4096 embedding would need
4 GB). Blocks of float32 weights are computed in float64, so the edit's own rounding stays far
below the forward pass's (the equivalence with runtime ablation is checked to 1e-4 in logits);
half-precision weights are computed in float32: rounding to 8 or 11 bits dominates anyway.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..models.adapter import ModelAdapter, blocks_of, get_adapter
from .vectors import SpanLike, as_basis, orthonormal_rows

__all__ = ["EXACT_EQUIVALENCE", "REMOVAL_ONLY", "orthogonalize", "orthogonalize_"]

EXACT_EQUIVALENCE = "equivalent to runtime ablation"
REMOVAL_ONLY = "direction removed exactly; not identical to runtime ablation (sandwich norms)"
CHUNK_ELEMENTS = 1 << 20  # 8 MB of float64 per block of rows: the only temporary
# save(name, tensor) is called with each parameter's original value before it is edited.
SaveFn = Callable[[str, torch.Tensor], None]


def _is_conv1d(mod: nn.Module) -> bool:
    return type(mod).__name__ == "Conv1D"  # GPT-2 stores (in, out): transposed


def _work_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float64 if w.dtype in (torch.float32, torch.float64) else torch.float32


def _row_blocks(w: torch.Tensor) -> range:
    step = max(1, CHUNK_ELEMENTS // max(1, w.shape[1]))
    return range(0, w.shape[0], step)


@torch.no_grad()
def _project_out_rows(w: torch.Tensor, r: torch.Tensor) -> None:
    """w (N, D) whose rows live in residual space: w <- w - (w . r) r, in place.

    ``r`` (D,) one unit vector, or (K, D) orthonormal rows: w <- w - (w Q^T) Q."""
    dt = _work_dtype(w)
    rw = r.to(w.device, dt)
    step = _row_blocks(w).step
    for i in _row_blocks(w):
        blk = w[i : i + step]
        x = blk.to(dt)
        if rw.ndim == 1:
            x.addr_(x @ rw, rw, alpha=-1)  # in place: no outer-product temporary
        else:
            x.addmm_(x @ rw.T, rw, alpha=-1)  # (rows, K) coefficients: the only temporary
        blk.copy_(x)
        del x  # freed before the next block is allocated


@torch.no_grad()
def _project_out_columns(w: torch.Tensor, u: torch.Tensor) -> None:
    """w (D, M) whose columns live in residual space: w <- w - u (u^T w), in place.

    ``u`` (D,) one unit vector, or (K, D) orthonormal rows: w <- w - U^T (U w)."""
    dt = _work_dtype(w)
    uw = u.to(w.device, dt)
    step = _row_blocks(w).step
    if uw.ndim == 1:
        c = torch.zeros(w.shape[1], dtype=torch.float64, device=w.device)
        for i in _row_blocks(w):  # c = u^T w, accumulated in float64 (M numbers)
            c += (uw[i : i + step] @ w[i : i + step].to(dt)).double()
        cw = c.to(dt)
        for i in _row_blocks(w):
            blk = w[i : i + step]
            x = blk.to(dt)
            x.addr_(uw[i : i + step], cw, alpha=-1)
            blk.copy_(x)
            del x
        return
    cm = torch.zeros(uw.shape[0], w.shape[1], dtype=torch.float64, device=w.device)
    for i in _row_blocks(w):  # C = U w (K, M), accumulated in float64
        cm += (uw[:, i : i + step] @ w[i : i + step].to(dt)).double()
    cmw = cm.to(dt)
    for i in _row_blocks(w):
        blk = w[i : i + step]
        x = blk.to(dt)
        x.addmm_(uw[:, i : i + step].T, cmw, alpha=-1)
        blk.copy_(x)
        del x


@torch.no_grad()
def _project_out_output(mod: nn.Module, prefix: str, u: torch.Tensor, save: SaveFn | None) -> None:
    w = mod.weight
    if save is not None:
        save(f"{prefix}.weight", w.data)
    if _is_conv1d(mod):  # y = x @ W + b, W (in, D): rows live in residual space
        _project_out_rows(w.data, u)
    else:  # nn.Linear: y = x @ W^T + b, W (D, in): columns live in residual space
        _project_out_columns(w.data, u)
    b = getattr(mod, "bias", None)
    if b is not None:
        if save is not None:
            save(f"{prefix}.bias", b.data)
        _project_out_rows(b.data.view(1, -1), u)


def untie(model: nn.Module) -> None:
    """Give the unembedding its own copy of tied embeddings, so editing one leaves the other."""
    out = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    if out is not None and out.weight is emb.weight:
        out.weight = nn.Parameter(
            emb.weight.detach().clone(), requires_grad=emb.weight.requires_grad
        )
    cfg = model.config
    cfg.tie_word_embeddings = False
    text = getattr(cfg, "text_config", None)
    if text is not None and hasattr(text, "tie_word_embeddings"):
        text.tie_word_embeddings = False


@torch.no_grad()
def orthogonalize_(
    model: nn.Module,
    r: torch.Tensor,
    adapter: ModelAdapter,
    *,
    layer: int | Sequence[int] | None = None,
    save: SaveFn | None = None,
) -> dict[str, Any]:
    """Edit ``model`` in place against the unit vector ``r``; returns the edit record.

    ``r`` may also be (K, D) orthonormal rows (:func:`~steerlab.interventions.runtime.
    as_basis`): the span is removed. A (1, D) basis is the (D,) edit, bit for bit.

    ``save(name, tensor)`` receives each parameter's original value before it changes, so a
    caller can restore the model exactly (see :class:`~steerlab.interventions.Orthogonalize`).
    Embeddings are untied first; that is left to the caller to undo.
    """
    if r.ndim == 2 and r.shape[0] == 1:
        r = r[0]
    k = 1 if r.ndim == 1 else int(r.shape[0])
    untie(model)
    emb_names = set(adapter.embeddings)
    for name, mod in model.named_modules():
        if name in emb_names:
            if save is not None:
                save(f"{name}.weight", mod.weight.data)
            _project_out_rows(mod.weight.data, r)
    blocks_path = adapter.blocks
    for i, block in enumerate(blocks_of(model, adapter)):
        for proj_path, write_path in (
            (adapter.attn_proj, adapter.attn_write),
            (adapter.mlp_proj, adapter.mlp_write),
        ):
            proj = block.get_submodule(proj_path)
            u = r.to(proj.weight.device)
            if adapter.sandwich:
                norm = block.get_submodule(write_path)
                g = norm.weight.detach().double().to(u.device) + adapter.norm_offset
                u = g * u
                # K > 1: the span of g * q_i (a gain making them dependent spans less)
                u = u / u.norm() if k == 1 else orthonormal_rows(u.cpu(), drop=True)[0].to(g.device)
            _project_out_output(proj, f"{blocks_path}.{i}.{proj_path}", u, save)
    edit: dict[str, Any] = {
        "kind": "orthogonalize",
        "layer": list(layer) if isinstance(layer, Sequence) else layer,
        "k": k,  # directions removed; the hash is of the (K, D) float64 basis
        "direction_sha256": hashlib.sha256(r.cpu().double().numpy().tobytes()).hexdigest()[:16],
        "equivalence": REMOVAL_ONLY if adapter.sandwich else EXACT_EQUIVALENCE,
    }
    model.config.steerlab_edit = edit
    return edit


@torch.no_grad()
def orthogonalize(
    model: nn.Module,
    direction: SpanLike,
    *,
    layer: int | Sequence[int] | None = None,
    inplace: bool = False,
    adapter: ModelAdapter | None = None,
) -> nn.Module:
    """Return a model whose weights can no longer write ``direction`` into the residual stream.

    Args:
        model: a stock HF causal LM (left untouched unless ``inplace``).
        direction: (D,) tensor or :class:`~steerlab.Direction` (row ``layer``); or several
            (a (K, D) tensor, a list of them, ``layer=[...]``), whose span is removed.
        inplace: edit ``model`` itself instead of a deep copy (no second copy in memory). For an
            edit undone on exit, use :class:`~steerlab.interventions.Orthogonalize`.

    Returns:
        The edited model, loadable and savable like any HF model (ties are undone and
        ``config.tie_word_embeddings`` set to False). ``config.steerlab_edit`` records the edit.

    Example:
        >>> edited = orthogonalize(model, direction, layer=12)  # doctest: +SKIP
        >>> edited.save_pretrained("abliterated")  # doctest: +SKIP
    """
    ad = adapter or get_adapter(model)
    basis = as_basis(model, direction, layer)  # (K, D) float64 orthonormal
    target = model if inplace else copy.deepcopy(model)
    orthogonalize_(target, basis, ad, layer=layer)
    return target
