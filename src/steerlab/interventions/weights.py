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
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch
from torch import nn

from ..models.adapter import ModelAdapter, blocks_of, get_adapter
from .runtime import VectorLike, as_unit

__all__ = ["EXACT_EQUIVALENCE", "orthogonalize"]


def _is_conv1d(mod: nn.Module) -> bool:
    return type(mod).__name__ == "Conv1D"  # GPT-2 stores (in, out): transposed


@torch.no_grad()
def _project_out_rows(weight: torch.Tensor, r: torch.Tensor) -> None:
    """weight (N, D) whose rows live in residual space: w <- w - (w . r) r."""
    # float64: the edit's own rounding must stay far below the 1e-4 logit tolerance.
    w, r = weight.data.double(), r.double()
    weight.data.copy_((w - torch.outer(w @ r, r)).to(weight.dtype))


@torch.no_grad()
def _project_out_output(mod: nn.Module, u: torch.Tensor) -> None:
    w = mod.weight
    if _is_conv1d(mod):  # y = x @ W + b, W (in, D): same as rows living in residual space
        _project_out_rows(w, u)
    else:  # nn.Linear: y = x @ W^T + b, W (D, in): W <- W - u (u^T W)
        wf, ud = w.data.double(), u.double()
        w.data.copy_((wf - torch.outer(ud, ud @ wf)).to(w.dtype))
    b = getattr(mod, "bias", None)
    if b is not None:
        bf, ud = b.data.double(), u.double()
        b.data.copy_((bf - (bf @ ud) * ud).to(b.dtype))


def _untie(model: nn.Module) -> None:
    out = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    if out is not None and out.weight is emb.weight:
        # Editing the embedding must not edit the unembedding: give lm_head its own copy.
        out.weight = nn.Parameter(emb.weight.detach().clone())
    cfg = model.config
    cfg.tie_word_embeddings = False
    text = getattr(cfg, "text_config", None)
    if text is not None and hasattr(text, "tie_word_embeddings"):
        text.tie_word_embeddings = False


EXACT_EQUIVALENCE = "equivalent to runtime ablation"
_REMOVAL_ONLY = "direction removed exactly; not identical to runtime ablation (sandwich norms)"


@torch.no_grad()
def orthogonalize(
    model: nn.Module,
    direction: VectorLike,
    *,
    layer: int | None = None,
    inplace: bool = False,
    adapter: ModelAdapter | None = None,
) -> nn.Module:
    """Return a model whose weights can no longer write ``direction`` into the residual stream.

    Args:
        model: a stock HF causal LM (left untouched unless ``inplace``).
        direction: (D,) tensor or :class:`~steerlab.Direction` (row ``layer``).
        inplace: edit ``model`` itself instead of a deep copy.

    Returns:
        The edited model, loadable and savable like any HF model (ties are undone and
        ``config.tie_word_embeddings`` set to False). ``config.steerlab_edit`` records the edit.

    Example:
        >>> edited = orthogonalize(model, direction, layer=12)  # doctest: +SKIP
        >>> edited.save_pretrained("abliterated")  # doctest: +SKIP
    """
    ad = adapter or get_adapter(model)
    r = as_unit(model, direction, layer)
    target = model if inplace else copy.deepcopy(model)
    _untie(target)
    emb_names = set(ad.embeddings)
    for name, mod in target.named_modules():
        if name in emb_names:
            _project_out_rows(mod.weight, r.to(mod.weight.device))
    for block in blocks_of(target, ad):
        for proj_path, write_path in ((ad.attn_proj, ad.attn_write), (ad.mlp_proj, ad.mlp_write)):
            proj = block.get_submodule(proj_path)
            u = r.to(proj.weight.device)
            if ad.sandwich:
                norm = block.get_submodule(write_path)
                g = norm.weight.detach().double().to(u.device) + ad.norm_offset
                u = g * u
                u = u / u.norm()
            _project_out_output(proj, u)
    edit: dict[str, Any] = {
        "kind": "orthogonalize",
        "layer": layer,
        "direction_sha256": hashlib.sha256(r.cpu().numpy().tobytes()).hexdigest()[:16],
        "equivalence": _REMOVAL_ONLY if ad.sandwich else EXACT_EQUIVALENCE,
    }
    target.config.steerlab_edit = edit
    return target
