"""LoRA finetuning on the same examples steering sees: SFT on the positive replies, DPO on the
pairs.

Both objectives share one loop (peft LoRA on the stock model, AdamW, a fixed number of steps,
the same batches in the same order), so the comparison differs in the objective alone. The
adapter is injected into the loaded model through :class:`~steerlab.interventions.LoRA` and
unloaded afterwards: the base weights are never copied, reloaded or changed.

DPO is the sigmoid loss of Rafailov et al. (2023). Its reference model is the base model,
which is the policy before training (peft initialises ``B = 0``): the reference
log-probabilities are computed once, before the first step, instead of a second model being
kept in memory (what TRL does for a peft policy too, by disabling the adapter).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..models.chat import eos_ids, format_prompt, has_chat_template, pad_id
from ..models.load import LoadedModel

__all__ = ["Checkpoint", "lora_config", "train_lora"]


@dataclass
class Checkpoint:
    """Adapter weights after ``step`` optimizer steps, and the mean training loss so far."""

    step: int
    state: dict[str, torch.Tensor]
    loss: float
    seconds: float  # training time up to this step (checkpoint copies excluded)


def lora_config(rank: int, modules: Sequence[str]) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=list(modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def target_modules(model: torch.nn.Module) -> list[str]:
    """The attention and MLP projections of the stock architectures (names peft matches)."""
    wanted = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    found = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    mods = [w for w in wanted if w in found]
    if not mods:  # other families: every linear layer but the output head
        mods = sorted(found - {"lm_head"})
    return mods


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
    from peft import get_peft_model_state_dict

    model = lm.model
    pid = pad_id(lm.tokenizer)
    prompts = [e[0] for e in examples]
    pos = _rows(lm, prompts, [e[1] for e in examples], chat)
    neg = _rows(lm, prompts, [e[2] for e in examples], chat) if objective == "dpo" else []
    n = len(examples)
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * min(batch, n):
        order += torch.randperm(n, generator=g).tolist()
    ref: tuple[torch.Tensor, torch.Tensor] | None = None
    if objective == "dpo":  # the reference: the policy before training (B = 0)
        with torch.no_grad():
            ref = (_logp(model, pos, pid), _logp(model, neg, pid))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    at = sorted({max(1, round(steps * (k + 1) / checkpoints)) for k in range(checkpoints)})
    out: list[Checkpoint] = []
    losses: list[float] = []
    spent = 0.0
    b = min(batch, n)
    was_training = model.training
    model.train()  # dropout is 0 in the adapter; train() only for modules that care
    try:
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            idx = order[(step - 1) * b : step * b]
            if objective == "sft":
                rows = [pos[i] for i in idx]
                ntok = sum(k for _, k in rows)
                loss = -_logp(model, rows, pid).sum() / max(ntok, 1)
            else:
                assert ref is not None
                lp = _logp(model, [pos[i] for i in idx] + [neg[i] for i in idx], pid)
                lc, lr_ = lp[: len(idx)], lp[len(idx) :]
                it = torch.tensor(idx)
                margin = (lc - ref[0][it]) - (lr_ - ref[1][it])
                loss = -torch.nn.functional.logsigmoid(beta * margin).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            spent += time.perf_counter() - t0
            if progress:
                progress(1)
            if step in at:
                state = {
                    k: v.detach().clone().cpu()
                    for k, v in get_peft_model_state_dict(peft_model).items()
                }
                out.append(Checkpoint(step, state, float(sum(losses) / len(losses)), spent))
    finally:
        model.train(was_training)
        opt.zero_grad(set_to_none=True)
    return out


def load_checkpoint(peft_model: Any, ck: Checkpoint) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(peft_model, ck.state)
