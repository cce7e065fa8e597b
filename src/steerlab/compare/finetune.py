"""LoRA finetuning on the same examples steering sees: SFT on the positive replies, DPO on the
pairs.

Both objectives run in :func:`steerlab.finetune.train_adapter` (the loop the organism trains
in too: peft LoRA on the stock model, AdamW, a fixed number of steps, the same batches in the
same order), so the comparison differs in the objective alone. The adapter is injected into the
loaded model through :class:`~steerlab.interventions.LoRA` and unloaded afterwards: the base
weights are never copied, reloaded or changed.

DPO is the sigmoid loss of Rafailov et al. (2023). Its reference model is the base model,
which is the policy before training (peft initialises ``B = 0``): the reference
log-probabilities are computed once, before the first step, instead of a second model being
kept in memory (what TRL does for a peft policy too, by disabling the adapter).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..finetune import (
    Checkpoint,
    load_checkpoint,
    lora_config,
    stream_batches,
    target_modules,
    train_adapter,
)
from ..models.chat import eos_ids, format_prompt, has_chat_template, pad_id
from ..models.load import LoadedModel

__all__ = ["Checkpoint", "load_checkpoint", "lora_config", "target_modules", "train_lora"]


def _end_ids(lm: LoadedModel) -> list[int]:
    return eos_ids(lm.model, lm.tokenizer)[:1]


def _rows(
    lm: LoadedModel, prompts: Sequence[str], replies: Sequence[str], chat: bool | None
) -> list[tuple[list[int], int]]:
    """(token ids of prompt + reply + end of turn, number of reply tokens) per example."""
    tok = lm.tokenizer
    use_chat = has_chat_template(tok) if chat is None else chat
    end = _end_ids(lm)
    out = []
    for p, r in zip(prompts, replies, strict=True):
        ctx = tok.encode(format_prompt(tok, p, chat=use_chat), add_special_tokens=not use_chat)
        ids = tok.encode(r, add_special_tokens=False) + end
        out.append((ctx + ids, len(ids)))
    return out


def _logp(model: torch.nn.Module, rows: Sequence[tuple[list[int], int]], pid: int) -> torch.Tensor:
    """Sum of log-probabilities of each row's reply tokens (right-padded batch)."""
    dev = next(model.parameters()).device
    T = max(len(r) for r, _ in rows)
    ids = torch.full((len(rows), T), pid, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for j, (r, k) in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r)
        mask[j, : len(r)] = 1
        target[j, len(r) - k : len(r)] = True
    ids, mask, target = ids.to(dev), mask.to(dev), target.to(dev)
    # logits only from the position before the earliest reply token on: the output head and
    # its softmax over the prompt tokens would cost time and memory for nothing
    start = max(min(len(r) - k for r, k in rows) - 1, 0)
    kw = dict(input_ids=ids, attention_mask=mask, use_cache=False)
    try:
        logits = model(**kw, logits_to_keep=T - start).logits
    except TypeError:  # models without logits_to_keep
        logits = model(**kw).logits[:, start:]
    lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, start + 1 :, None])
    return (lp[..., 0] * target[:, start + 1 :]).sum(-1)


def train_lora(
    lm: LoadedModel,
    peft_model: Any,
    examples: Sequence[tuple[str, str, str]],
    *,
    objective: str,
    steps: int,
    lr: float,
    batch: int,
    checkpoints: int,
    beta: float = 0.1,
    seed: int = 0,
    chat: bool | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Checkpoint]:
    """Train the (fresh, trainable) adapter in ``peft_model`` on ``examples`` of
    ``(prompt, positive, negative)``; ``objective`` is ``sft`` (positive replies) or ``dpo``.

    Returns copies of the adapter weights at ``checkpoints`` evenly spaced steps (the last is
    ``steps``), for choosing one on the selection split.
    """
    model = lm.model
    pid = pad_id(lm.tokenizer)
    prompts = [e[0] for e in examples]
    pos = _rows(lm, prompts, [e[1] for e in examples], chat)
    neg = _rows(lm, prompts, [e[2] for e in examples], chat) if objective == "dpo" else []
    ref: tuple[torch.Tensor, torch.Tensor] | None = None
    if objective == "dpo":  # the reference: the policy before training (B = 0)
        with torch.no_grad():
            ref = (_logp(model, pos, pid), _logp(model, neg, pid))

    def loss_fn(idx: Sequence[int]) -> torch.Tensor:
        if objective == "sft":
            rows = [pos[i] for i in idx]
            ntok = sum(k for _, k in rows)
            return -_logp(model, rows, pid).sum() / max(ntok, 1)
        assert ref is not None
        lp = _logp(model, [pos[i] for i in idx] + [neg[i] for i in idx], pid)
        lc, lr_ = lp[: len(idx)], lp[len(idx) :]
        it = torch.tensor(idx)
        margin = (lc - ref[0][it]) - (lr_ - ref[1][it])
        return -torch.nn.functional.logsigmoid(beta * margin).mean()

    at = sorted({max(1, round(steps * (k + 1) / checkpoints)) for k in range(checkpoints)})
    return train_adapter(
        model,
        stream_batches(len(examples), batch, steps, seed),
        loss_fn,
        lr=lr,
        checkpoints=at,
        peft_model=peft_model,
        progress=progress,
    ).checkpoints
