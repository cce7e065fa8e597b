"""Export the orthogonalized model as a plain Hugging Face checkpoint, verified before success.

The refusal pipeline's use of the shared export path (:mod:`steerlab.export.checkpoint`):

1. :func:`prepare_export` (before the long evaluation): the weights are orthogonalized in place,
   saved into a temporary directory beside the destination, restored; the checkpoint is
   reloaded with stock ``transformers`` and its logits are compared with runtime ablation on
   the original model (:func:`logit_check`).
2. :func:`publish_export` (after the evaluation): the model card with the measured rates is
   added and the directory is moved into place. A failed check publishes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..export import checkpoint as ck
from ..export.checkpoint import ExportCheck, tolerance
from ..interventions import Ablate, Orthogonalize
from ..models.load import LoadedModel

__all__ = ["ExportCheck", "logit_check", "prepare_export", "publish_export", "tolerance"]


def logit_check(
    lm: LoadedModel, vec: torch.Tensor, other: nn.Module, prompts: list[str], chat: bool | None
) -> dict[str, Any]:
    """Compare ``other``'s logits with runtime ablation of ``vec`` on ``lm`` (see
    :func:`steerlab.export.checkpoint.logit_check`); ``ablation_effect_rel`` is how far ablation
    itself moves the logits."""
    check = ck.logit_check(lm, Ablate(vec), other, prompts, chat)
    check["ablation_effect_rel"] = check.pop("effect_rel")
    return check


def prepare_export(
    lm: LoadedModel,
    vec: torch.Tensor,
    export_dir: Path,
    prompts: list[str],
    chat: bool | None,
    *,
    keep: tuple[Path, ...] = (),
    overwrite: bool = False,
    spill_dir: Path | None = None,
) -> ExportCheck:
    """Write the orthogonalized checkpoint beside ``export_dir`` and check it (see module).

    The caller removes ``ExportCheck.tmp`` if it does not publish it."""
    prepared = ck.prepare_checkpoint(
        lm,
        Orthogonalize(vec, spill_dir=spill_dir),
        Ablate(vec),
        export_dir,
        prompts,
        chat,
        what="runtime ablation",
        exact=not lm.adapter.sandwich,
        keep=keep,
        overwrite=overwrite,
    )
    prepared.check["ablation_effect_rel"] = prepared.check.pop("effect_rel")
    return prepared


def publish_export(
    prepared: ExportCheck,
    export_dir: Path,
    card: str,
    record: dict[str, Any],
    *,
    keep: tuple[Path, ...] = (),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Add the card and the record, mark the directory as steerlab's, move it into place."""
    out = ck.publish_checkpoint(prepared, export_dir, card, record, keep=keep, overwrite=overwrite)
    out["max_logit_diff_vs_ablation"] = out.pop("max_logit_diff")
    return out
