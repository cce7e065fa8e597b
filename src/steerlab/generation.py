"""Batched generation (left-padded, greedy by default, seedable) and next-token scoring."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .capture import forward_kwargs
from .models.chat import encode, eos_ids, pad_id
from .models.compat import cache_kwarg
from .prefix import MIN_PREFIX, prefix_batch, prefix_last_logits
from .prefix import prefix_cache as cached_prefix

__all__ = ["generate", "generate_jobs", "last_token_logprobs"]


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = 0,
    chat: bool | None = None,
    system: str | None = None,
    progress: Callable[[int], None] | None = None,
    first_logprobs: bool = False,
    prefix_cache: bool = False,
) -> list[str] | tuple[list[str], torch.Tensor]:
    """Generate a completion for each prompt (chat template applied when present).

    Interventions apply by wrapping the call: ``with steer(model, v, layers=8): generate(...)``.

    Args:
        temperature: 0 means greedy decoding.
        seed: seeds torch before each batch so sampled runs repeat.
        progress: called with the number of prompts finished after each batch.
        first_logprobs: also return the (N, V) log-probabilities of the first new token (the
            prompt's next-token distribution, before any sampling processors), for free.
        prefix_cache: compute the tokens every prompt of a batch shares (the chat template's
            system part) once per batch. Same results; do not combine with steering restricted
            to ``generated`` positions.

    Returns:
        The decoded new text for each prompt, special tokens removed (and the log-probs).
    """
    from .engines import bound_engine

    device = next(model.parameters()).device
    engine = bound_engine(model)
    if engine is not None:
        return _on_engine(
            engine,
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            chunk=batch_size,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            chat=chat,
            system=system,
            progress=progress,
            first_logprobs=first_logprobs,
        )
    cfg = _generation_config(model, tokenizer, max_new_tokens, temperature, top_p, first_logprobs)
    outs: list[str] = []
    firsts: list[torch.Tensor] = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i : i + batch_size])
        inputs = _batch_inputs(model, tokenizer, chunk, chat, system, prefix_cache, device)
        if seed is not None:
            torch.manual_seed(seed + i)
        res = model.generate(**inputs, generation_config=cfg)
        ids = res.sequences if first_logprobs else res
        if first_logprobs:
            firsts.append(torch.log_softmax(res.logits[0].float(), -1).cpu())
        new = ids[:, inputs["input_ids"].shape[1] :]
        outs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
        if progress:
            progress(len(chunk))
    if first_logprobs:
        return outs, torch.cat(firsts)
    return outs


def _generation_config(
    model: nn.Module,
    tokenizer: Any,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    first_logprobs: bool,
) -> Any:
    """Greedy (temperature 0) or sampled decoding, stopping at every end-of-turn token."""
    from transformers import GenerationConfig

    sample = temperature > 0
    eos = eos_ids(model, tokenizer)
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature if sample else None,
        top_p=top_p if sample else None,
        top_k=None,
        pad_token_id=pad_id(tokenizer),
        eos_token_id=eos[0] if len(eos) == 1 else (eos or None),
        output_logits=first_logprobs,
        return_dict_in_generate=first_logprobs,
    )


def _batch_inputs(
    model: nn.Module,
    tokenizer: Any,
    chunk: list[str],
    chat: bool | None,
    system: str | None,
    prefix_cache: bool,
    device: torch.device,
) -> dict[str, Any]:
    """``model.generate`` inputs for one batch; with ``prefix_cache``, the suffixes and the
    KV cache of their shared prefix when it is long enough to pay off."""
    batch = encode(tokenizer, chunk, chat=chat, system=system).to(device)
    inputs: dict[str, Any] = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
    }
    pb = prefix_batch(tokenizer, chunk, chat=chat) if prefix_cache and system is None else None
    if pb is not None and pb.prefix_len >= MIN_PREFIX and len(chunk) > 1:
        inputs = {
            "input_ids": pb.input_ids.to(device),
            "attention_mask": pb.attention_mask.to(device),
            cache_kwarg(model): cached_prefix(model, pb),
        }
    return inputs


def generate_jobs(
    lm: Any,
    jobs: Sequence[tuple[Any, Sequence[str]]],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    chat: bool | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Greedy completions for several ``(intervention, prompts)`` jobs on one loaded model.

    On the Hugging Face engine the jobs run one after the other, each inside its
    intervention. On a bound vLLM engine they decode in a single call, each job a request
    group under its own treatment (the throughput of one large batch); each intervention is
    entered on the Hugging Face model only to read what it records and to render its prompts.
    """
    from .engines import bound_engine
    from .engines.vllm import plan_for
    from .interventions.record import active_ops

    engine = bound_engine(lm.model)
    if engine is None:
        out: list[list[str]] = []
        for iv, prompts in jobs:
            if not prompts:  # an empty job keeps its place
                out.append([])
                continue
            with iv.applied(lm) as m:
                out.append(
                    generate(
                        m.model,
                        m.tokenizer,
                        prompts,
                        max_new_tokens=max_new_tokens,
                        batch_size=batch_size,
                        chat=chat,
                        progress=progress,
                    )
                )
        return out
    groups = []
    for iv, prompts in jobs:
        if not prompts:  # an empty job keeps its place
            groups.append(([], []))
            continue
        with iv.applied(lm) as m:
            plan = plan_for(active_ops(m.model))
            ids = engine.token_ids(list(prompts), chat=chat, system=None, tokenizer=m.tokenizer)
        groups.append((ids, plan))
    new = engine.generate_groups(
        groups,
        max_new_tokens=max_new_tokens,
        stop_ids=eos_ids(lm.model, lm.tokenizer),
        progress=progress,
    )
    return [[lm.tokenizer.decode(t, skip_special_tokens=True) for t in g] for g in new]


@torch.no_grad()
def _on_engine(
    engine: Any,
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    chunk: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    chat: bool | None,
    system: str | None,
    progress: Callable[[int], None] | None,
    first_logprobs: bool,
) -> list[str] | tuple[list[str], torch.Tensor]:
    """:func:`generate` on a bound engine (vLLM), repeating the treatments applied to
    ``model``; the first-token log-probabilities come from ``model`` itself (one forward)."""
    from .engines.vllm import plan_for
    from .interventions.record import active_ops

    plan = plan_for(active_ops(model))
    stops = eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    # every prompt in one call: vLLM batches continuously (chunking would cap its batch)
    ids = engine.token_ids(list(prompts), chat=chat, system=system, tokenizer=tokenizer)
    new = engine.generate_ids(
        ids,
        plan,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop_ids=stops,
        progress=progress,
    )
    outs = [tokenizer.decode(t, skip_special_tokens=True) for t in new]
    firsts: list[torch.Tensor] = []
    if first_logprobs:
        for i in range(0, len(prompts), chunk):
            batch = encode(tokenizer, list(prompts[i : i + chunk]), chat=chat, system=system)
            logits = model(**forward_kwargs(batch.to(device))).logits[:, -1]
            firsts.append(torch.log_softmax(logits.float(), -1).cpu())
    if first_logprobs:
        return outs, torch.cat(firsts)
    return outs


@torch.no_grad()
def last_token_logprobs(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    chat: bool | None = None,
    progress: Callable[[int], None] | None = None,
    prefix: bool = True,
) -> torch.Tensor:
    """(N, V) float32 log-probabilities of the first reply token (interventions apply).

    With ``prefix`` the tokens shared by every prompt of a batch (the chat template's system
    part) are computed once per batch (see :mod:`steerlab.prefix`); results are the same.
    """
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i : i + batch_size])
        pb = prefix_batch(tokenizer, chunk, chat=chat) if prefix and len(chunk) > 1 else None
        if pb is not None and pb.prefix_len >= MIN_PREFIX:
            logits = prefix_last_logits(model, pb)
        else:
            batch = encode(tokenizer, chunk, chat=chat).to(device)
            kw = forward_kwargs(batch)
            try:
                logits = model(**kw, logits_to_keep=1).logits[:, -1]
            except TypeError:  # models without logits_to_keep
                logits = model(**kw).logits[:, -1]
        out.append(torch.log_softmax(logits.float(), -1).cpu())
        if progress:
            progress(len(chunk))
    return torch.cat(out)
