"""Cross-entropy of continuations: a fluency / capability cost for interventions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..models.chat import format_prompt, pad_id

__all__ = ["continuation_loss"]


@torch.no_grad()
def continuation_loss(
    model: nn.Module,
    tokenizer: Any,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    chat: bool | None = None,
    batch_size: int = 8,
) -> float:
    """Mean per-token cross-entropy (nats) of ``continuations`` given ``contexts``.

    With ``chat`` (default: when the tokenizer has a template) each context is a user message
    and the continuation the assistant's reply, e.g. the unsteered model's own completions.
    With ``chat=False`` and empty contexts this is plain language-model loss on the texts.
    Only the continuation's logits are computed (left padding puts them at the end).
    """
    device = next(model.parameters()).device
    total, count = 0.0, 0
    pid = pad_id(tokenizer)
    for i in range(0, len(contexts), batch_size):
        rows, cont_lens = [], []
        for ctx, cont in zip(
            contexts[i : i + batch_size], continuations[i : i + batch_size], strict=True
        ):
            use_chat = chat if chat is not None else bool(getattr(tokenizer, "chat_template", None))
            if use_chat:
                prefix = tokenizer.encode(
                    format_prompt(tokenizer, ctx, chat=True), add_special_tokens=False
                )
            else:
                prefix = tokenizer.encode(ctx, add_special_tokens=True) if ctx else []
                if not prefix:
                    bos = getattr(tokenizer, "bos_token_id", None)
                    prefix = [bos if bos is not None else pid]
            cont_ids = tokenizer.encode(cont, add_special_tokens=False)
            if not cont_ids:
                continue
            rows.append(prefix + cont_ids)
            cont_lens.append(len(cont_ids))
        if not rows:
            continue
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), pid, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, r in enumerate(rows):
            ids[j, T - len(r) :] = torch.tensor(r)
            mask[j, T - len(r) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        k = max(cont_lens) + 1
        kw = dict(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=pos.to(device),
            use_cache=False,
        )
        try:
            logits = model(**kw, logits_to_keep=k).logits
        except TypeError:
            logits = model(**kw).logits[:, -k:]
        logp = torch.log_softmax(logits[:, :-1].float(), -1)  # predicts the last k-1 tokens
        targets = ids[:, T - k + 1 :].to(device)
        nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, k-1)
        for j, n in enumerate(cont_lens):
            total += float(nll[j, -n:].sum())
            count += n
    return total / max(count, 1)
