"""What a comparison settles before any method runs: which methods cannot run here (and why),
and the activations and residual norms every steering method is fitted and scaled from."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from ..behaviors.behavior import Behavior
from ..capture import capture_stats
from ..errors import DataError
from ..evaluate.norms import residual_norms
from ..models.chat import format_prompt, has_chat_template
from ..models.load import LoadedModel
from ..runs import Run
from .config import CompareConfig
from .methods import REGISTRY

if TYPE_CHECKING:
    from .state import Compare

__all__ = ["capture", "skipped_methods"]

FINETUNED = ("lora", "dpo", "lora+mean_diff")


def _system_reason(lm: LoadedModel, chat: bool | None) -> str | None:
    """Why the system-prompt method cannot run here (None: it can)."""
    tok = lm.tokenizer
    if not (has_chat_template(tok) if chat is None else chat):
        return "the prompts are used without a chat template, so there is no system role"
    marker = "steerlab-system-check"
    try:
        text = format_prompt(tok, "hi", chat=True, system=marker)
    except DataError:
        return "the chat template rejects a system message"
    if marker not in text:
        return "the chat template drops system messages"
    return None


def skipped_methods(
    lm: LoadedModel, behavior: Behavior, cfg: CompareConfig, engine: Any = None
) -> dict[str, str]:
    """The methods that cannot run here, each with the reason."""
    methods = list(cfg.methods)
    out: dict[str, str] = {}
    if not behavior.pairs:
        for m in methods:
            if REGISTRY[m].needs == "pairs":
                out[m] = (
                    "the behaviour has no pairs (prompt, positive reply, negative reply): this "
                    "method learns from, or shows, such examples"
                )
    if not behavior.description:
        for m in ("zero_shot", "system_prompt"):
            if m in methods:
                out.setdefault(m, "the behaviour has no description to instruct with")
    if "system_prompt" in methods and "system_prompt" not in out:
        why = _system_reason(lm, cfg.chat)
        if why:
            out["system_prompt"] = why
    finetuned = [m for m in FINETUNED if m in methods and m not in out]
    if finetuned and engine is not None and engine.name != "hf":
        for m in finetuned:
            out[m] = (
                "an adapter trained in this process cannot be repeated inside vLLM's "
                "workers; compare it with --engine hf"
            )
    try:
        import peft  # noqa: F401
    except ImportError:  # pragma: no cover - peft is a dependency
        for m in finetuned:
            out.setdefault(m, "peft is not installed")
    return out


def capture(c: Compare, run: Run) -> None:
    """The pool's positive and negative replies at the steering layers (every draw's vectors
    are means over these rows), and the median residual norm strengths are scaled by."""
    lm, cfg, layers = c.lm, c.cfg, c.layers
    chat_used = has_chat_template(lm.tokenizer) if cfg.chat is None else cfg.chat
    texts = [
        [format_prompt(lm.tokenizer, p, chat=chat_used) + r[k] for p, *r in c.pool] for k in (0, 1)
    ]
    run.say(f"capturing {len(c.pool)} pairs at layer(s) {layers}")

    def capture() -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        stats = []
        with run.bar("capture", 2 * len(texts[0])) as adv:
            for ts in texts:
                stats.append(
                    capture_stats(
                        lm.model,
                        lm.tokenizer,
                        lm.adapter,
                        ts,
                        layers,
                        keep_samples=True,
                        chat=False,
                        progress=adv,
                    )
                )
        dt = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        return {"pos": stats[0].stacked(), "neg": stats[1].stacked(), "seconds": dt}

    if c.pool:
        c.acts = run.cache.tensors("capture", [texts[0], texts[1], layers], capture)
    else:  # nothing to steer with: the methods that need pairs were skipped
        empty = torch.zeros(0, len(layers), lm.info.d_model)
        c.acts = {"pos": empty, "neg": empty, "seconds": torch.zeros(1, dtype=torch.float64)}
    c.per_pair = float(c.acts["seconds"][0]) / max(len(c.pool), 1)
    norms = run.cache.json(
        "norms",
        [c.sel, layers, cfg.chat],
        lambda: {str(k): v for k, v in residual_norms(lm, c.sel, layers, chat=cfg.chat).items()},
    )
    c.norms = {int(k): float(v) for k, v in norms.items()}
