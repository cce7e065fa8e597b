"""Teacher-forced scoring under per-row treatments: the log-likelihood of given continuations
(:func:`continuation_nll_rows`), and the batch helpers the greedy engine shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..interventions.base import Intervention, NoOp
from ..interventions.per_row import PerRow
from ..models.chat import format_prompt, has_chat_template, pad_id
from ..models.compat import cache_kwarg
from ..models.load import LoadedModel
from ..prefix import MIN_PREFIX, prefix_cache, prefix_rows

__all__ = ["continuation_nll_rows", "left_pad", "treated"]


@torch.no_grad()
def continuation_nll_rows(
    lm: LoadedModel,
    contexts: Sequence[str],
    continuations: Sequence[str],
    settings: Sequence[Intervention] | None = None,
    *,
    chat: bool | None = None,
    batch_rows: int = 32,
) -> list[tuple[float, int]]:
    """(sum of negative log-likelihood in nats, token count) of each continuation given its
    context (a user message answered by the continuation when the model has a chat template).

    An empty continuation gives ``(0.0, 0)``.
    """
    tok = lm.tokenizer
    use_chat = has_chat_template(tok) if chat is None else chat
    pid = pad_id(tok)
    res: list[tuple[float, int]] = []
    for i in range(0, len(contexts), batch_rows):
        rows, lens = [], []
        for ctx, cont in zip(
            contexts[i : i + batch_rows], continuations[i : i + batch_rows], strict=True
        ):
            if use_chat:
                pre = tok.encode(format_prompt(tok, ctx, chat=True), add_special_tokens=False)
            else:
                pre = tok.encode(ctx, add_special_tokens=True) if ctx else []
                if not pre:
                    bos = getattr(tok, "bos_token_id", None)
                    pre = [bos if bos is not None else pid]
            ids = tok.encode(cont, add_special_tokens=False) if cont else []
            rows.append(pre + ids)
            lens.append(len(ids))
        rows_s = None if settings is None else settings[i : i + batch_rows]
        k = max(lens) + 1
        res += _nll(lm, rows, lens, k, rows_s, pid)
    return res


def _nll(
    lm: LoadedModel,
    rows: list[list[int]],
    lens: list[int],
    k: int,
    settings: Sequence[Intervention] | None,
    pid: int,
) -> list[tuple[float, int]]:
    """NLL of the last ``lens[j]`` tokens of each row. Unsteered rows share their common prefix
    (the chat template's system part): it is computed once and its cache repeated."""
    dev = lm.device
    pb = prefix_rows(rows, pid) if settings is None and len(rows) > 1 else None
    kw: dict[str, Any]
    if (
        pb is not None
        and pb.prefix_len >= MIN_PREFIX
        and k <= pb.input_ids.shape[1] - pb.prefix_len
    ):
        p = pb.prefix_len
        kw = dict(
            input_ids=pb.input_ids[:, p:].to(dev),
            attention_mask=pb.attention_mask.to(dev),
            position_ids=pb.position_ids[:, p:].to(dev),
            use_cache=True,
            **{cache_kwarg(lm.model): prefix_cache(lm.model, pb)},
        )
        ids = pb.input_ids
    else:
        ids, mask = left_pad(rows, pid)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        kw = dict(
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            position_ids=pos.to(dev),
            use_cache=False,
        )
    with treated(lm, settings):
        try:
            logits = lm.model(**kw, logits_to_keep=k).logits
        except TypeError:
            logits = lm.model(**kw).logits[:, -k:]
    T = ids.shape[1]
    targets = ids[:, T - k + 1 :].to(dev)
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, reduction="none"
    )  # (B, k-1)
    return [(float(nll[j, k - 1 - m :].sum()) if m else 0.0, m) for j, m in enumerate(lens)]


def treated(lm: LoadedModel, rows: Sequence[Intervention] | None) -> Any:
    return PerRow(rows).applied(lm) if rows else NoOp().applied(lm)


def left_pad(rows: Sequence[Sequence[int]], pid: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pid, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for j, r in enumerate(rows):
        if r:
            ids[j, T - len(r) :] = torch.tensor(list(r))
            mask[j, T - len(r) :] = 1
    return ids, mask
