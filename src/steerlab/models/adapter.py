"""Where things live in a decoder: a small declarative adapter.

Resolution order: user override -> table keyed by ``config.model_type`` -> structural guess.
When all fail, the error says how to pass an override.

Layer convention (used everywhere in steerlab, pinned by tests):
    ``resid_pre[l]``  = input of block ``l``  = ``output_hidden_states[l]``
    ``resid_post[l]`` = output of block ``l`` = ``resid_pre[l + 1]``
HF's last ``hidden_states`` entry is taken *after* the final norm, so it is not
``resid_post[n_layers - 1]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from torch import nn

from ..errors import SteerlabError

__all__ = ["ARCH_TABLE", "ModelAdapter", "get_adapter"]


@dataclass(frozen=True)
class ModelAdapter:
    """Dotted module paths, relative to the ``*ForCausalLM`` model.

    Attributes:
        blocks: the ``ModuleList`` of decoder blocks.
        embeddings: modules whose outputs are written into the residual stream before block 0
            (token embeddings, plus learned position embeddings for GPT-2).
        attn_write: per-block module (relative to the block) whose output is added to the
            residual by attention; for sandwich-norm models this is the post-attention norm.
        mlp_write: same for the MLP.
        attn_proj: per-block output projection of attention (the weight orthogonalization edits).
        mlp_proj: per-block output projection of the MLP.
        final_norm: the norm before the unembedding.
        sandwich: True when ``attn_write``/``mlp_write`` are norms applied after the projections.
        norm_offset: constant added to a sandwich norm's weight to get its gain (Gemma: 1.0).
    """

    blocks: str
    embeddings: tuple[str, ...]
    attn_write: str
    mlp_write: str
    attn_proj: str
    mlp_proj: str
    final_norm: str
    sandwich: bool = False
    norm_offset: float = 0.0
    source: str = "table"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_LLAMA = ModelAdapter(
    blocks="model.layers",
    embeddings=("model.embed_tokens",),
    attn_write="self_attn.o_proj",
    mlp_write="mlp.down_proj",
    attn_proj="self_attn.o_proj",
    mlp_proj="mlp.down_proj",
    final_norm="model.norm",
)
_GEMMA_SANDWICH = replace(
    _LLAMA,
    attn_write="post_attention_layernorm",
    mlp_write="post_feedforward_layernorm",
    sandwich=True,
    norm_offset=1.0,
)

# Per-architecture data, as peft keeps its target modules: one row per model_type.
ARCH_TABLE: dict[str, ModelAdapter] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "phi3": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _GEMMA_SANDWICH,
    "gemma3_text": _GEMMA_SANDWICH,
    "gpt2": ModelAdapter(
        blocks="transformer.h",
        embeddings=("transformer.wte", "transformer.wpe"),
        attn_write="attn.c_proj",
        mlp_write="mlp.c_proj",
        attn_proj="attn.c_proj",
        mlp_proj="mlp.c_proj",
        final_norm="transformer.ln_f",
    ),
    "gpt_neox": ModelAdapter(
        blocks="gpt_neox.layers",
        embeddings=("gpt_neox.embed_in",),
        attn_write="attention.dense",
        mlp_write="mlp.dense_4h_to_h",
        attn_proj="attention.dense",
        mlp_proj="mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
    ),
}

_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "ffn")
_ATTN_OUT = ("o_proj", "out_proj", "c_proj", "dense", "wo")
_MLP_OUT = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2", "wo")
_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f")


def _get(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def _n_layers(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    return getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)


def _guess(model: nn.Module) -> ModelAdapter:
    """Structural guess: the longest homogeneous ModuleList is the block stack."""
    n = _n_layers(model)
    best: tuple[str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        homogeneous = isinstance(mod, nn.ModuleList) and len({type(m) for m in mod}) == 1
        fits = homogeneous and (n is None or len(mod) == n)
        if fits and (best is None or len(mod) > len(best[1])):
            best = (name, mod)
    if best is None:
        raise LookupError("no homogeneous ModuleList of decoder blocks")
    blocks_path, blocks = best
    block = blocks[0]
    child = dict(block.named_children())

    def find(parents: tuple[str, ...], leaves: tuple[str, ...]) -> str:
        for p in parents:
            if p in child:
                sub = dict(child[p].named_children())
                for leaf in leaves:
                    if leaf in sub:
                        return f"{p}.{leaf}"
        raise LookupError(f"no output projection under {parents}")

    attn = find(_ATTN_NAMES, _ATTN_OUT)
    mlp = find(_MLP_NAMES, _MLP_OUT)
    prefix = blocks_path.rsplit(".", 1)[0] if "." in blocks_path else ""
    base = _get(model, prefix) if prefix else model
    norm = next((nm for nm in _NORM_NAMES if hasattr(base, nm)), None)
    if norm is None:
        raise LookupError("no final norm")
    emb = model.get_input_embeddings()
    emb_path = next(nm for nm, m in model.named_modules() if m is emb)
    return ModelAdapter(
        blocks=blocks_path,
        embeddings=(emb_path,),
        attn_write=attn,
        mlp_write=mlp,
        attn_proj=attn,
        mlp_proj=mlp,
        final_norm=f"{prefix}.{norm}" if prefix else norm,
        source="guess",
    )


def _validate(model: nn.Module, ad: ModelAdapter) -> ModelAdapter:
    blocks = _get(model, ad.blocks)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise LookupError(f"{ad.blocks} is not a non-empty ModuleList")
    for p in ad.embeddings:
        _get(model, p)
    _get(model, ad.final_norm)
    for rel in (ad.attn_write, ad.mlp_write, ad.attn_proj, ad.mlp_proj):
        blocks[0].get_submodule(rel)
    return ad


def get_adapter(
    model: nn.Module, override: dict[str, Any] | ModelAdapter | None = None
) -> ModelAdapter:
    """Resolve the adapter for ``model``.

    Args:
        model: a Hugging Face ``*ForCausalLM`` (or anything with the same layout).
        override: a full :class:`ModelAdapter`, or a dict of fields that replace those of the
            table row / guess (e.g. ``{"blocks": "model.decoder.layers"}``).

    Returns:
        A validated :class:`ModelAdapter`.
    """
    if isinstance(override, ModelAdapter):
        return _validate(model, override)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    errors: list[str] = []
    base: ModelAdapter | None = ARCH_TABLE.get(model_type or "")
    if base is None:
        try:
            base = _guess(model)
        except (LookupError, AttributeError) as e:
            errors.append(f"structural guess failed: {e}")
    if override:
        known = {f.name for f in fields(ModelAdapter)}
        bad = set(override) - known
        if bad:
            raise SteerlabError(f"unknown adapter fields {sorted(bad)}; known: {sorted(known)}")
        vals = {**(base.to_dict() if base else {}), **override, "source": "override"}
        vals["embeddings"] = tuple(vals.get("embeddings", ()))
        try:
            base = ModelAdapter(**vals)
        except TypeError as e:
            raise SteerlabError(f"incomplete adapter override: {e}") from None
    if base is not None:
        try:
            return _validate(model, base)
        except (LookupError, AttributeError) as e:
            errors.append(f"{base.source} adapter does not fit: {e}")
    raise SteerlabError(
        f"cannot find the decoder blocks of model_type={model_type!r} ({'; '.join(errors)}). "
        'Pass an adapter override, e.g. --adapter \'{"blocks": "model.layers", '
        '"embeddings": ["model.embed_tokens"], "attn_write": "self_attn.o_proj", '
        '"mlp_write": "mlp.down_proj", "attn_proj": "self_attn.o_proj", '
        '"mlp_proj": "mlp.down_proj", "final_norm": "model.norm"}\''
    )


def blocks_of(model: nn.Module, adapter: ModelAdapter) -> nn.ModuleList:
    mods = _get(model, adapter.blocks)
    assert isinstance(mods, nn.ModuleList)
    return mods
