"""Steering written into the weights: the added vector becomes the bias of a block's last
output projection, so a stock checkpoint steers with no hook.

Adding ``delta`` to the residual stream at the input of block ``l`` (``resid_pre[l]``) is adding
it to the output of block ``l - 1``, whose last write into the residual is its MLP output
projection (``down_proj``; ``c_proj`` in GPT-2). ``y = W x + b + delta`` is that projection
with bias ``b + delta``, exactly, at every position, prompt tokens included. Where the
projection has no bias, an architecture can still express one if its config has a flag that
creates MLP biases (Llama's ``mlp_bias``): the flag is set and every bias it creates is zero but
the one that carries ``delta``. Refused, with the reason, where neither holds (Qwen2's MLP has
no bias and no flag) or where a bias cannot add a fixed vector to the residual at all (sandwich
norms normalize the projection's output before the residual add: Gemma 2/3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..capture import Site
from ..directions.artifact import Direction
from ..errors import LayerError, SteerlabError
from ..models.adapter import ModelAdapter, blocks_of
from ..models.load import LoadedModel
from .base import vector_spec
from .vectors import VectorLike, as_vector, check_coeff

__all__ = ["BakeSteer", "bias_block"]

EXACT = "equivalent to runtime steering (all positions, prompt included)"


def bias_block(layer: int, site: str) -> int:
    """The block whose MLP output projection carries steering at ``layer`` / ``site``."""
    b = layer - 1 if site == "resid_pre" else layer
    if site not in ("resid_pre", "resid_post"):
        raise LayerError(f"cannot bake steering at site {site!r}")
    if b < 0:
        raise LayerError(
            "the input of block 0 is the embedding output, which no bias writes: bake at a "
            "resid_pre layer >= 1"
        )
    return b


def _missing_biases(model: nn.Module, flag: str) -> dict[str, torch.Size]:
    """Parameters the model would have with ``config.<flag> = True`` and has not (built on the
    meta device: no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    cfg = model.config.__class__.from_dict(model.config.to_dict())
    setattr(cfg, flag, True)
    with torch.device("meta"):
        probe = AutoModelForCausalLM.from_config(cfg)
    have = dict(model.named_parameters())
    want = {n: p.shape for n, p in probe.named_parameters()}
    extra = {n: s for n, s in want.items() if n not in have}
    if not extra or any(not n.endswith(".bias") for n in extra):
        raise SteerlabError(
            f"setting {flag}=True does not add only biases to this model; cannot bake steering"
        )
    return extra


def plan_bias(model: nn.Module, adapter: ModelAdapter, block: int) -> tuple[str, str | None]:
    """How block ``block``'s MLP output projection can carry a bias: ``("native", None)`` when
    it has one, ``("flag", name)`` when a config flag creates it; else a clear error."""
    mt = getattr(model.config, "model_type", "?")
    if adapter.sandwich:
        raise SteerlabError(
            f"{mt} normalizes each sublayer's output before adding it to the residual "
            "(sandwich norms), so no bias adds a fixed vector to the residual stream; steering "
            "cannot be baked into its weights exactly (use the GGUF export or runtime steering)"
        )
    proj = blocks_of(model, adapter)[block].get_submodule(adapter.mlp_proj)
    if getattr(proj, "bias", None) is not None:
        return "native", None
    if hasattr(model.config, "mlp_bias"):
        return "flag", "mlp_bias"
    raise SteerlabError(
        f"{mt}'s MLP output projection has no bias and its config has no flag that adds one "
        "(like Llama's mlp_bias), so a stock checkpoint cannot hold the steering exactly; use "
        "the GGUF export or runtime steering"
    )


@dataclass(frozen=True, eq=False)
class BakeSteer:
    """Steering at one layer as a bias, in place while the context is open, undone on exit.

    Computes what :class:`~steerlab.interventions.Steer` computes with ``positions="all"``;
    ``save_pretrained`` inside the context writes a checkpoint that plain ``transformers``
    reloads with the steering built in (see :mod:`steerlab.export.hf`).
    """

    vector: VectorLike
    layer: int
    coeff: float = 1.0
    site: Site | None = None
    name: str = "bake_steer"

    def __post_init__(self) -> None:
        check_coeff(self.coeff)

    def _site(self) -> str:
        return str(self.site or getattr(self.vector, "site", "resid_pre"))

    def ops(self) -> list[dict[str, Any]]:
        v = self.vector.vector(self.layer) if isinstance(self.vector, Direction) else self.vector
        return [
            {
                "kind": "bake_steer",
                "vector": v.detach().float().cpu(),
                "layer": self.layer,
                "coeff": float(self.coeff),
                "site": self._site(),
            }
        ]

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "bake_steer",
            "layer": self.layer,
            "coeff": self.coeff,
            "site": self._site(),
            "vector": vector_spec(self.vector, self.layer),
        }

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        model, ad = lm.model, lm.adapter
        site = self._site()
        n = len(blocks_of(model, ad))
        if not 0 <= self.layer < n:
            raise LayerError(f"layer {self.layer} is outside the model's 0..{n - 1}")
        block = bias_block(self.layer, site)
        how, flag = plan_bias(model, ad, block)
        delta = self.coeff * as_vector(model, self.vector, self.layer).double()
        proj_name = f"{ad.blocks}.{block}.{ad.mlp_proj}"
        proj = model.get_submodule(proj_name)
        created: list[tuple[nn.Module, str]] = []
        old_bias = None
        cfg = model.config
        had_flag, old_flag = hasattr(cfg, flag or ""), getattr(cfg, flag or "", None)
        had_edit, old_edit = hasattr(cfg, "steerlab_edit"), getattr(cfg, "steerlab_edit", None)
        try:
            with torch.no_grad():
                if how == "flag":
                    assert flag is not None
                    for name, shape in _missing_biases(model, flag).items():
                        mod = model.get_submodule(name.rsplit(".", 1)[0])
                        w = mod.weight
                        mod.register_parameter(
                            "bias",
                            nn.Parameter(
                                torch.zeros(shape, dtype=w.dtype, device=w.device),
                                requires_grad=False,
                            ),
                        )
                        created.append((mod, "bias"))
                    setattr(cfg, flag, True)
                else:
                    old_bias = proj.bias.data.clone()
                b = proj.bias
                b.data.copy_((b.data.double() + delta.to(b.device)).to(b.dtype))
            cfg.steerlab_edit = {
                "kind": "bake_steer",
                "layer": self.layer,
                "site": site,
                "bias_of": proj_name,
                "coeff": self.coeff,
                "config_flag": flag,
                "vector_sha256": hashlib.sha256(delta.float().numpy().tobytes()).hexdigest()[:16],
                "equivalence": EXACT,
            }
            yield lm
        finally:
            with torch.no_grad():
                for mod, pname in created:
                    mod.register_parameter(pname, None)
                if old_bias is not None:
                    proj.bias.data.copy_(old_bias)
            if flag is not None:
                if had_flag:
                    setattr(cfg, flag, old_flag)
                else:
                    delattr(cfg, flag)
            if had_edit:
                cfg.steerlab_edit = old_edit
            elif hasattr(cfg, "steerlab_edit"):
                del cfg.steerlab_edit
