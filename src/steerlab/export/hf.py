"""``steerlab export hf``: steering at one layer baked into a stock Hugging Face checkpoint.

The edit is :class:`~steerlab.interventions.bias.BakeSteer` (the vector becomes the bias of the
block's MLP output projection); the checkpoint goes through the shared checked export path
(:mod:`steerlab.export.checkpoint`): reloaded with plain ``AutoModelForCausalLM`` and compared
with runtime :class:`~steerlab.interventions.Steer` before anything is published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..directions.artifact import LAYER_CONVENTION, Direction
from ..errors import SteerlabError
from ..interventions import Steer
from ..interventions.bias import BakeSteer
from ..models.load import LoadedModel
from .card import model_card
from .checkpoint import prepare_checkpoint, publish_checkpoint

__all__ = ["export_hf"]


def export_hf(
    lm: LoadedModel,
    direction: Direction,
    layer: int,
    coeff: float,
    out: Path,
    prompts: list[str],
    *,
    source: str = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``lm`` with ``coeff * direction`` added at ``layer`` (the direction's site) as a
    plain checkpoint in ``out``; returns the export record (with the logit check)."""
    if out.exists() and not overwrite:
        raise SteerlabError(f"export dir {out} exists; pass --overwrite to replace it")
    row = layer if layer in direction.layers else None
    if row is None and len(direction.layers) != 1:
        direction.vector(layer)  # raises: which layers the artifact has
    vec = direction.vector(row)
    edit = BakeSteer(vec, layer, coeff, site=direction.site)  # type: ignore[arg-type]
    ref = Steer(vec, layers=layer, coeff=coeff, site=direction.site)  # type: ignore[arg-type]
    prepared = prepare_checkpoint(
        lm, edit, ref, out, prompts, None, what="runtime steering", overwrite=overwrite
    )
    if prepared.error:
        raise SteerlabError(prepared.error)
    spec = edit.spec()
    rec = prepared.edit  # what the edit wrote into the checkpoint's config (bias target, flag)
    card = model_card(
        "steer",
        model_id=lm.info.model_id,
        coeff=coeff,
        site=direction.site,
        layer=layer,
        layer_convention=LAYER_CONVENTION,
        bias_of=rec["bias_of"],
        config_flag=rec["config_flag"],
        vector_source=source or direction.meta.get("method", "a steering vector"),
        vector_norm=float(vec.norm()),
        check=prepared.check,
        equivalence=prepared.equivalence,
    )
    record = {
        "kind": "steer",
        "model": lm.info.to_dict(),
        "edit": rec,
        "spec": spec,
        "source": source,
        "direction_meta": {k: v for k, v in direction.meta.items() if k != "model"},
    }
    return publish_checkpoint(prepared, out, card, record, overwrite=overwrite)
