"""Export the orthogonalized model as a plain Hugging Face checkpoint, verified before success."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..capture import forward_kwargs
from ..errors import SteerlabError
from ..interventions import ablate
from ..models.chat import encode
from ..models.load import LoadedModel
from .config import RefusalConfig

__all__ = ["export_model"]

TOLERANCE = 1e-4


def _card(
    lm: LoadedModel,
    best: dict[str, Any],
    metrics: dict[str, Any],
    cfg: RefusalConfig,
    check: float,
    equivalence: str,
) -> str:
    def rate(variant: str, which: str) -> str:
        m = metrics.get(variant, {})
        v, ci = m.get(f"{which}_refusal_rate"), m.get(f"{which}_refusal_ci")
        return "—" if v is None else f"{v:.0%} (95% CI {ci[0]:.0%}–{ci[1]:.0%})"

    kl = metrics.get("orthogonalized", {}).get("kl_harmless")
    return f"""# {lm.info.model_id} with the refusal direction removed

This checkpoint was written by steerlab {__version__} (`steerlab refusal --export`). It is
`{lm.info.model_id}` with one direction in the residual stream projected out of every weight
that writes to it (token embeddings, attention and MLP output projections and their biases):
weight orthogonalization, as in Arditi et al. 2024, "Refusal in language models is mediated
by a single direction". It loads with stock `transformers`; nothing from steerlab is needed.

- Direction: difference in means of harmful vs harmless prompts at layer {best["layer"]},
  token position {best["position"]} (from the end of the prompt), `resid_pre` convention.
- Selection scores on validation prompts: bypass {best["bypass_score"]:.3f}, induce
  {best["induce_score"]:.3f}, KL {best["kl_score"]:.4f}.
- Equivalence: {equivalence}. Checked at export: max |logit difference| vs runtime ablation on
  held-out prompts = {check:.2e} (tolerance {TOLERANCE:g}).

## Measured effects (held-out prompts, greedy, {cfg.max_new_tokens} new tokens)

| | harmful refusal rate | harmless refusal rate |
|---|---|---|
| original model | {rate("baseline", "harmful")} | {rate("baseline", "harmless")} |
| this model | {rate("orthogonalized", "harmful")} | {rate("orthogonalized", "harmless")} |

First-token KL from the original on harmless prompts: {"—" if kl is None else f"{kl:.4f}"}.
Refusal is judged by the reference phrase list; see `report.json` of the run for the stricter
measure, intervals and the random-direction control.

**This model will comply with harmful requests its original refused.** Use it for research
on refusal and safety, not to serve users.
"""


@torch.no_grad()
def export_model(
    lm: LoadedModel,
    edited: nn.Module,
    vec: torch.Tensor,
    export_dir: Path,
    metrics: dict[str, Any],
    best: dict[str, Any],
    cfg: RefusalConfig,
    *,
    overwrite: bool,
    prompts: list[str],
) -> dict[str, Any]:
    """Save ``edited`` with ``save_pretrained`` into a temp dir, reload it with stock
    transformers, compare its logits with runtime ablation, then move it into place."""
    from transformers import AutoModelForCausalLM

    if export_dir.exists() and not overwrite:
        raise SteerlabError(f"export dir {export_dir} exists; pass --overwrite to replace it")
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = export_dir.parent / f".{export_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        edited.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=next(edited.parameters()).dtype)
        reloaded.to(next(edited.parameters()).device).eval()
        worst = 0.0
        for p in prompts:  # one prompt per forward: no padding (see test_real_model)
            batch = encode(lm.tokenizer, [p], chat=cfg.chat).to(next(edited.parameters()).device)
            with ablate(lm.model, vec, adapter=lm.adapter):
                ref = lm.model(**forward_kwargs(batch)).logits.float()
            got = reloaded(**forward_kwargs(batch)).logits.float()
            worst = max(worst, float((got - ref).abs().max()))
        del reloaded
        equivalence = edited.config.steerlab_edit["equivalence"]
        exact = not lm.adapter.sandwich
        if exact and worst > TOLERANCE:
            raise SteerlabError(
                f"exported model differs from runtime ablation by {worst:.2e} "
                f"(> {TOLERANCE:g}); not exported"
            )
        (tmp / "README.md").write_text(_card(lm, best, metrics, cfg, worst, equivalence))
        (tmp / "steerlab_export.json").write_text(
            json.dumps(
                {
                    "source_model": lm.info.to_dict(),
                    "selected": best,
                    "max_logit_diff": worst,
                    "equivalence": equivalence,
                    "steerlab_version": __version__,
                },
                indent=2,
                default=str,
            )
        )
        if export_dir.exists():
            shutil.rmtree(export_dir)
        os.replace(tmp, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"dir": str(export_dir), "max_logit_diff_vs_ablation": worst, "equivalence": equivalence}
