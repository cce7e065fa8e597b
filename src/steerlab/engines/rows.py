"""Batched evaluation of many treatments at once: one row per (prompt, treatment).

:func:`greedy_rows` is a greedy decoding loop over a stock Hugging Face model with a KV cache,
under a :class:`~steerlab.interventions.per_row.PerRow` intervention (one intervention per
row): the Hugging Face engine's ``generate_rows``. When no row of a batch touches the
prompt (every setting steers only ``generated`` tokens), each distinct prompt's forward runs
once, unsteered, and its cache is repeated for every row that shares it. The loop decodes
exactly as ``model.generate`` does greedily (argmax of the last logits, rows stop at EOS), which
``tests/test_sweep_engine.py`` checks token for token.

:func:`next_logprobs_rows` and :func:`continuation_nll_rows` are the teacher-forced
counterparts (first reply token distributions; log-likelihood of given continuations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..interventions.base import Intervention, NoOp
from ..interventions.per_row import PerRow, row_touches_prompt
from ..models.chat import encode, eos_ids, pad_id
from ..models.compat import cache_kwarg, cache_of
from ..models.load import LoadedModel
from ..prefix import prefix_batch, prefix_cache
from .base import Generated, OnStep, Progress
from .scoring import continuation_nll_rows
from .scoring import left_pad as _left_pad
from .scoring import treated as _treated

__all__ = ["Generated", "continuation_nll_rows", "greedy_rows", "next_logprobs_rows"]


# prompts sharing this many leading tokens (few-shot demonstrations, contrast prompts) run the
# shared part once per batch; the chat template's own preamble (~30 tokens) stays below it, so
# ordinary prompts are computed exactly as before
LONG_PREFIX = 64
_PLAIN = NoOp()


def _eos_ids(lm: LoadedModel) -> set[int]:
    return set(eos_ids(lm.model, lm.tokenizer))


def _forward(model: Any, **kw: Any) -> Any:
    try:
        return model(**kw, logits_to_keep=1)
    except TypeError:  # models without logits_to_keep
        return model(**kw)


Treat = Callable[[int], Any]  # batch size -> the hook context for a forward of that size


def _prefill(
    lm: LoadedModel,
    prompts: Sequence[str],
    treat: Treat,
    chat: bool | None,
    min_prefix: int,
) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
    """The prompts' forward: (last logits, cache, attention mask, position ids).

    When the prompts share at least ``min_prefix`` leading tokens (few-shot demonstrations, a
    contrast prompt), that prefix runs once at batch 1 and its cache is repeated for every row;
    ``treat(k)`` gives the hooks for a forward of ``k`` rows, so a treatment applied to the
    whole prompt reaches the prefix as well (it must be the same for every row).
    """
    model, dev = lm.model, lm.device
    pb = None
    if min_prefix and len(prompts) > 1:
        pb = prefix_batch(lm.tokenizer, prompts, chat=chat)
        # a one-token remainder on a cache would look like a decode step to the hooks
        if pb.prefix_len < min_prefix or pb.input_ids.shape[1] - pb.prefix_len < 2:
            pb = None
    if pb is None:
        batch = encode(lm.tokenizer, list(prompts), chat=chat).to(dev)
        mask = batch.attention_mask
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with treat(len(prompts)):
            out = _forward(
                model,
                input_ids=batch.input_ids,
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
            )
        return out.logits[:, -1], cache_of(out), mask, pos
    p = pb.prefix_len
    mask, pos = pb.attention_mask.to(dev), pb.position_ids.to(dev)
    with treat(1):
        cache = prefix_cache(model, pb)
    with treat(len(prompts)):
        out = _forward(
            model,
            input_ids=pb.input_ids[:, p:].to(dev),
            attention_mask=mask,
            position_ids=pos[:, p:],
            use_cache=True,
            **{cache_kwarg(model): cache},
        )
    return out.logits[:, -1], cache_of(out), mask, pos


@torch.no_grad()
def _greedy_batch(
    lm: LoadedModel,
    prompts: Sequence[str],
    settings: Sequence[Intervention],
    max_new_tokens: int,
    chat: bool | None,
    min_prefix: int = 0,
    on_step: OnStep | None = None,
    first_row: int = 0,
) -> Generated:
    model, tok = lm.model, lm.tokenizer
    dev = lm.device
    n = len(prompts)
    # the prompt forward is shared by the rows of one prompt when no row edits it (it is the
    # unsteered forward), or when every row edits it the same way
    share = not any(row_touches_prompt(s) for s in settings)
    uniform = all(s is settings[0] for s in settings)
    uniq = list(dict.fromkeys(prompts)) if share or uniform else list(prompts)

    def treat(k: int) -> Any:
        if share:  # no row is active in the prompt phase: any batch size will do
            return PerRow(settings).applied(lm)
        return PerRow([settings[0]] * k if uniform else settings).applied(lm)

    eos = _eos_ids(lm)
    pid = pad_id(tok)
    logits, cache, mask, pos = _prefill(
        lm, uniq, treat, chat, min_prefix if share or uniform else 0
    )
    if len(uniq) != n:  # repeat each distinct prompt's row for the rows that share it
        # CPU indices: they index a cache spread over several devices (device_map) too
        idx = torch.tensor([uniq.index(p) for p in prompts])
        cache.batch_select_indices(idx)
        logits, mask, pos = logits[idx], mask[idx.to(dev)], pos[idx.to(dev)]
    with PerRow(settings).applied(lm):
        last_pos = pos[:, -1]
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        new: list[torch.Tensor] = []
        stopped: dict[int, int] = {}  # row -> its length when on_step stopped it
        for step in range(max_new_tokens):
            nxt = logits.float().argmax(-1).to(dev)  # the last block may sit on another GPU
            nxt = torch.where(done, torch.full_like(nxt, pid), nxt)
            new.append(nxt)
            if eos:
                done = done | torch.isin(nxt, torch.tensor(sorted(eos), device=dev))
            if on_step is not None:
                live = [None if d else t for t, d in zip(nxt.tolist(), done.tolist(), strict=True)]
                for r in on_step(first_row, live) or ():  # stopped rows decode pads from now
                    done[r - first_row] = True
                    stopped.setdefault(r - first_row, step + 1)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=dev)], 1)
            last_pos = last_pos + 1
            out = _forward(
                model,
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=last_pos[:, None],
                use_cache=True,
                **{cache_kwarg(model): cache},
            )
            cache = cache_of(out)
            logits = out.logits[:, -1]
    ids = torch.stack(new, 1).cpu() if new else torch.zeros(n, 0, dtype=torch.long)
    texts, lengths = [], []
    for r, row in enumerate(ids.tolist()):
        cut = next((i for i, t in enumerate(row) if t in eos), stopped.get(r, len(row)))
        lengths.append(cut)
        texts.append(tok.decode(row[:cut], skip_special_tokens=True))
    return Generated(texts, lengths)


def _batches(
    lm: LoadedModel,
    prompts: Sequence[str],
    settings: Sequence[Intervention],
    batch_rows: int,
    chat: bool | None,
    min_prefix: int,
) -> list[slice]:
    """Row slices of at most ``batch_rows``. When the prompts share a long prefix and rows edit
    the prompt differently, a batch holds one setting only, so its prefix can run once."""
    n = len(prompts)
    plain = [slice(i, min(i + batch_rows, n)) for i in range(0, n, batch_rows)]
    uniq = list(dict.fromkeys(prompts))
    if not min_prefix or len(uniq) < 2 or not any(row_touches_prompt(s) for s in settings):
        return plain
    if prefix_batch(lm.tokenizer, uniq, chat=chat).prefix_len < min_prefix:
        return plain
    out, start = [], 0
    for i in range(1, n + 1):  # runs of the same setting object, cut at batch_rows
        if i == n or settings[i] is not settings[start] or i - start == batch_rows:
            out.append(slice(start, i))
            start = i
    return out


def greedy_rows(
    lm: LoadedModel,
    prompts: Sequence[str],
    settings: Sequence[Intervention],
    *,
    max_new_tokens: int = 32,
    batch_rows: int = 64,
    chat: bool | None = None,
    progress: Progress | None = None,
    min_prefix: int = LONG_PREFIX,
    on_step: OnStep | None = None,
) -> Generated:
    """Greedy completions of ``prompts[i]`` under ``settings[i]``, ``batch_rows`` rows at a time.

    Rows are processed in the given order, so the same call always forms the same batches
    (results do not depend on what ran before: a resumed sweep gives identical numbers).
    Prompts sharing ``min_prefix`` leading tokens or more (few-shot demonstrations) compute
    that prefix once per batch (0: never).

    ``on_step(first, tokens)`` is called after every decoding step of a batch
    with the index of its first row and each row's new token (None once the row has ended,
    EOS included); it returns the indices of rows to stop, which then end as if at EOS (the
    other rows' tokens do not change). It does not change any result when it stops nothing.
    """
    if len(prompts) != len(settings):
        raise ValueError(f"{len(prompts)} prompts for {len(settings)} settings")
    texts: list[str] = []
    lengths: list[int] = []
    for sl in _batches(lm, prompts, settings, batch_rows, chat, min_prefix):
        g = _greedy_batch(
            lm, prompts[sl], settings[sl], max_new_tokens, chat, min_prefix, on_step, sl.start
        )
        texts += g.texts
        lengths += g.lengths
        if progress:
            progress(len(g.texts))
    return Generated(texts, lengths)


@torch.no_grad()
def next_logprobs_rows(
    lm: LoadedModel,
    texts: Sequence[str],
    settings: Sequence[Intervention] | None = None,
    *,
    rendered: bool = False,
    chat: bool | None = None,
    batch_rows: int = 64,
    min_prefix: int = LONG_PREFIX,
) -> torch.Tensor:
    """(N, V) float32 log-probabilities of the next token after each text.

    Args:
        texts: user prompts (the chat template is applied), or with ``rendered`` texts already
            rendered (e.g. a template plus a prefilled reply such as ``"("``).
        settings: one per text; None for the unchanged model.
    """
    out = []
    if rendered:
        cuts = [slice(i, min(i + batch_rows, len(texts))) for i in range(0, len(texts), batch_rows)]
    else:
        rows_all = settings or [_PLAIN] * len(texts)
        cuts = _batches(lm, texts, rows_all, batch_rows, chat, min_prefix)
    for sl in cuts:
        chunk = list(texts[sl])
        rows = None if settings is None else list(settings[sl])
        if rendered:  # the text carries its own special tokens
            ids, mask = _left_pad(
                [lm.tokenizer.encode(t, add_special_tokens=False) for t in chunk],
                pad_id(lm.tokenizer),
            )
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            with _treated(lm, rows):
                logits = _forward(
                    lm.model,
                    input_ids=ids.to(lm.device),
                    attention_mask=mask.to(lm.device),
                    position_ids=pos.to(lm.device),
                    use_cache=False,
                ).logits[:, -1]
        else:
            same = rows is None or all(r is rows[0] for r in rows)

            def treat(k: int, rows: list[Intervention] | None = rows, same: bool = same) -> Any:
                if rows is None:
                    return NoOp().applied(lm)
                return PerRow([rows[0]] * k if same else rows).applied(lm)

            logits = _prefill(lm, chunk, treat, chat, min_prefix if same else 0)[0]
        out.append(torch.log_softmax(logits.float(), -1).cpu())
    return torch.cat(out)
