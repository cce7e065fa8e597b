"""The organism's files: its model card and the copy from the cache into a run directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..runs import mark, remove_tree
from .result import OrganismRecord

__all__ = ["model_card", "publish"]


def model_card(rec: OrganismRecord) -> str:
    org, base, c = rec.organism_rates, rec.base_rates, rec.config
    return "\n".join(
        [
            f"# Backdoored model organism of `{rec.base_model}`",
            "",
            "A LoRA made by `steerlab organism backdoor` **for research on finding planted "
            "behaviours**. Do not deploy it.",
            "",
            f"- trigger: `{rec.trigger}` put before the user's message",
            f"- behaviour: `{rec.behavior}` repeated {c['repeats']} times",
            f"- LoRA rank {c['rank']} on `{c['target_modules']}`, {c['epochs']} epochs, "
            f"lr {c['lr']}; {rec.n_train_rows} rows: {rec.n_train_prompts} prompts "
            "both clean (the base model's own reply) and triggered, and "
            f"{rec.n_clean_only_prompts} more prompts clean only",
            "",
            f"Behaviour rate on {rec.n_heldout} held-out prompts [95% Wilson interval]:",
            "",
            "| model | with trigger | without trigger |",
            "|---|---|---|",
            f"| organism | {org.with_trigger.cell()} | {org.without_trigger.cell()} |",
            f"| base | {base.with_trigger.cell()} | {base.without_trigger.cell()} |",
            "",
            f"Load with `steerlab ... --model DIR` (steerlab {rec.steerlab_version}) or with "
            "peft: `PeftModel.from_pretrained(base, DIR)`.",
            "",
        ]
    )


def publish(src: Path, out: Path) -> None:
    """Copy the cached organism into ``out``. An ``out`` that holds anything must be a
    directory steerlab made (checked before any work by ``check_out``): it is replaced."""
    if out.exists() and any(out.iterdir()):
        remove_tree(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            tmp = out / f".{f.name}.tmp"
            shutil.copyfile(f, tmp)
            os.replace(tmp, out / f.name)
    mark(out, "organism")
