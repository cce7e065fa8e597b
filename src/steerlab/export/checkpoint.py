"""Export an edited model as a plain Hugging Face checkpoint, verified before it is published.

One path for every weight edit (orthogonalization from ``steerlab refusal --export``, steering
baked into a bias from ``steerlab export hf``):

1. :func:`prepare_checkpoint`: the weights are edited in place by a weight-edit
   :class:`~steerlab.interventions.Intervention`, saved with ``save_pretrained`` into a temporary
   directory beside the destination and restored; the checkpoint is reloaded with stock
   ``transformers`` and its logits are compared with the runtime intervention it claims to
   equal, on the original model (:func:`logit_check`).
2. :func:`publish_checkpoint`: the model card and the record are added, the directory is marked
   as steerlab's and moved into place. A failed check publishes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..capture import forward_kwargs
from ..interventions.base import Intervention
from ..models.chat import encode
from ..models.load import LoadedModel
from ..runs import MARKER, atomic_write, check_new_dir, mark

__all__ = [
    "ExportCheck",
    "logit_check",
    "prepare_checkpoint",
    "publish_checkpoint",
    "tolerance",
]

# Relative tolerance (max |logit difference| / max |logit|) per dtype: float32 rounding of the
# edit and of the hooks accumulates to ~1e-5 over 24 layers (measured on qwen2.5-coder-0.5b);
# half precisions round each of the hundreds of operations to 8 (bf16) or 11 (fp16) bits.
_REL_TOL = {torch.float32: 1e-3, torch.float64: 1e-6, torch.float16: 3e-2, torch.bfloat16: 1e-1}


def tolerance(dtype: torch.dtype) -> float:
    """The relative logit tolerance of the export check for a model in ``dtype``."""
    return _REL_TOL.get(dtype, 1e-1)


@torch.no_grad()
def logit_check(
    lm: LoadedModel,
    reference: Intervention,
    other: nn.Module,
    prompts: list[str],
    chat: bool | None,
) -> dict[str, Any]:
    """Compare ``other``'s logits with ``reference`` applied at run time on ``lm``, one prompt
    per forward (no padding), relative to the logit scale; ``effect_rel`` is how far the
    reference itself moves the logits, on the same scale, so a reader can tell a small error
    from no effect."""
    dtype = next(lm.model.parameters()).dtype
    worst, rel, effect = 0.0, 0.0, 0.0
    for p in prompts:
        batch = encode(lm.tokenizer, [p], chat=chat).to(lm.device)
        kw = forward_kwargs(batch)
        base = lm.model(**kw).logits.float()
        with reference.applied(lm) as m:
            ref = m.model(**kw).logits.float()
        got = other(**forward_kwargs(batch.to(next(other.parameters()).device))).logits
        diff = (got.float().to(ref.device) - ref).abs().max()
        scale = ref.abs().max().clamp_min(1e-12)
        worst = max(worst, float(diff))
        rel = max(rel, float(diff / scale))
        effect = max(effect, float((ref - base).abs().max() / scale))
    tol = tolerance(dtype)
    return {
        "reference": reference.spec().get("kind", type(reference).__name__),
        "max_abs_diff": worst,
        "max_rel_diff": rel,
        "effect_rel": effect,
        "dtype": str(dtype).replace("torch.", ""),
        "tolerance_rel": tol,
        "prompts": len(prompts),
        "passed": rel <= tol,
    }


@dataclass
class ExportCheck:
    """A checkpoint written to ``tmp`` and checked; ``error`` says why it cannot be published."""

    tmp: Path | None
    check: dict[str, Any]
    equivalence: str
    error: str | None = None
    edit: dict[str, Any] = field(default_factory=dict)  # config.steerlab_edit as written


def _tmp_for(export_dir: Path) -> Path:
    return export_dir.parent / f".{export_dir.name}.tmp-{os.getpid()}"


def prepare_checkpoint(
    lm: LoadedModel,
    edit: Intervention,
    reference: Intervention,
    export_dir: Path,
    prompts: list[str],
    chat: bool | None,
    *,
    what: str,
    exact: bool = True,
    keep: tuple[Path, ...] = (),
    overwrite: bool = False,
) -> ExportCheck:
    """Write ``edit``'s checkpoint beside ``export_dir`` and check it against ``reference``.

    ``what`` names the reference in messages ("runtime ablation"). With ``exact=False`` the
    edit is not claimed to equal the reference (sandwich norms): the check is recorded with
    ``passed = None``. The caller removes ``ExportCheck.tmp`` if it does not publish it."""
    from transformers import AutoModelForCausalLM

    check_new_dir(export_dir, overwrite=overwrite, keep=keep, what="export dir")
    tmp = _tmp_for(export_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    dtype = next(lm.model.parameters()).dtype
    try:
        with edit.applied(lm) as edited:
            edited.model.save_pretrained(tmp)
            edit_rec = dict(edited.model.config.steerlab_edit)
            equivalence = str(edit_rec["equivalence"])
        lm.tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).to(lm.device).eval()
        check = logit_check(lm, reference, reloaded, prompts, chat)
        del reloaded
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not exact:
        check["passed"] = None  # exact removal, not equivalence: nothing to hold it to
    elif not check["passed"]:
        error = (
            f"the exported model differs from {what} by {check['max_rel_diff']:.2e} of the "
            f"logit scale (tolerance {check['tolerance_rel']:g} in {check['dtype']}); "
            "not exported"
        )
        shutil.rmtree(tmp, ignore_errors=True)
        return ExportCheck(None, check, equivalence, error, edit_rec)
    return ExportCheck(tmp, check, equivalence, edit=edit_rec)


def publish_checkpoint(
    prepared: ExportCheck,
    export_dir: Path,
    card: str,
    record: dict[str, Any],
    *,
    keep: tuple[Path, ...] = (),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Add the card and the record, mark the directory as steerlab's, move it into place."""
    assert prepared.tmp is not None
    tmp = prepared.tmp
    try:
        atomic_write(tmp / "README.md", card.encode("utf-8"))
        rec = {
            **record,
            "check": prepared.check,
            "equivalence": prepared.equivalence,
            "steerlab_version": __version__,
        }
        atomic_write(tmp / "steerlab_export.json", json.dumps(rec, indent=2, default=str).encode())
        mark(tmp, "export")
        check_new_dir(export_dir, overwrite=overwrite, keep=keep, what="export dir")
        if export_dir.exists():
            shutil.rmtree(export_dir)
        os.replace(tmp, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "dir": str(export_dir),
        "check": prepared.check,
        "max_logit_diff": prepared.check["max_abs_diff"],
        "equivalence": prepared.equivalence,
        "marker": MARKER,
    }
