"""Run a slice of the *stock* decoder blocks on cached inputs, K steering vectors at a time.

MELBO steers at the input of block ``S`` and reads at the input of block ``T``. Blocks
``0..S-1`` never see the steering vector, and blocks ``T..`` are never needed, so:

1. One stock forward (hooks only, stopped with :class:`~steerlab.hooks.StopForward` at block
   ``T``) records ``resid_pre[S]``, the unsteered ``resid_pre[T]``, and the exact arguments the
   model's own layer loop passed to each block ``S..T-1`` (attention mask, rotary embeddings,
   position ids, ...).
2. Each training step calls those same block modules with those same arguments on
   ``resid_pre[S] + theta_k``, for all K vectors in one batch of ``K * B`` rows.

Why this is exact: in transformers 5 every decoder (llama, qwen2, gemma3_text, mistral, phi3,
gpt2, gpt_neox) computes the per-layer arguments *before* its loop, from the input ids, the
attention mask and the position ids only -- never from the hidden states -- and then runs
``hidden_states = layer(hidden_states, **per_layer_args)`` with nothing in between. Gemma 3 and
Qwen 2 pick each layer's mask and rotary table by its *index* (``config.layer_types[i]``), so
swapping in a shorter ``ModuleList`` would hand block ``S`` the arguments of block 0; replaying
the recorded arguments per block avoids that and leaves the module tree untouched.

Batching: every tensor argument whose first dimension is the batch size ``B`` is repeated K
times (vector ``k`` owns rows ``k*B .. (k+1)*B - 1``), as ``generate`` expands its inputs;
tensors with first dimension 1 broadcast. An argument of any other kind (e.g. a flex-attention
``BlockMask``) makes :func:`capture_prefix` record a second prefix pass on the K-times repeated
batch instead, which is exact too, only costlier once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..capture import forward_kwargs
from ..hooks import StopForward, scoped_hooks, untuple
from ..models.chat import Batch

__all__ = ["BlockCall", "PrefixCache", "capture_prefix", "frozen", "run_slice"]

_PLAIN = (type(None), bool, int, float, str, torch.dtype, torch.device)


class _Unbatchable(Exception):
    """An argument that cannot be repeated along the batch dimension by a simple rule."""


@dataclass
class BlockCall:
    """The arguments one block received, without its hidden states."""

    args: tuple[Any, ...]  # positional arguments after the hidden states
    kwargs: dict[str, Any]
    hidden_as_kwarg: bool  # hidden states came as ``hidden_states=`` rather than args[0]

    def __call__(self, block: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if self.hidden_as_kwarg:
            return untuple(block(*self.args, hidden_states=h, **self.kwargs))
        return untuple(block(h, *self.args, **self.kwargs))

    def repeated(self, rows: int, k: int, memo: dict[int, torch.Tensor]) -> BlockCall:
        """The same call for ``k * rows`` hidden states; ``memo`` shares repeated tensors."""
        args = _repeat(self.args, rows, k, memo)
        return BlockCall(args, _repeat(self.kwargs, rows, k, memo), self.hidden_as_kwarg)


def _repeat(obj: Any, rows: int, k: int, memo: dict[int, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        if obj.ndim == 0 or k == 1 or (obj.shape[0] == 1 and rows != 1):
            return obj  # scalars and size-1 batch dimensions broadcast
        if obj.shape[0] != rows:
            raise _Unbatchable(f"tensor of shape {tuple(obj.shape)}")
        # Blocks share their mask and rotary tables: repeat each tensor once, not per block.
        if id(obj) not in memo:
            memo[id(obj)] = obj.repeat(k, *([1] * (obj.ndim - 1)))
        return memo[id(obj)]
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, tuple):
        return tuple(_repeat(x, rows, k, memo) for x in obj)
    if isinstance(obj, list):
        return [_repeat(x, rows, k, memo) for x in obj]
    if isinstance(obj, dict):
        return {key: _repeat(v, rows, k, memo) for key, v in obj.items()}
    raise _Unbatchable(type(obj).__name__)


@dataclass
class PrefixCache:
    """Everything a training step needs from the frozen part of the model, for one batch.

    Attributes:
        source: (B, T, D) ``resid_pre[S]`` of the unsteered model.
        target: (B, T, D) ``resid_pre[T]`` of the unsteered model, ``Z_T(0)``.
        calls: arguments of blocks ``S..T-1``, already repeated for ``K * B`` rows.
        k: how many vectors the calls are batched for.
    """

    source: torch.Tensor
    target: torch.Tensor
    calls: list[BlockCall]
    k: int


def _record(
    model: nn.Module,
    blocks: nn.ModuleList,
    batch: Batch,
    source: int,
    target: int,
) -> tuple[torch.Tensor, torch.Tensor, list[BlockCall]]:
    """One stock forward, stopped at the input of block ``target``."""
    calls: dict[int, BlockCall] = {}
    got: dict[str, torch.Tensor] = {}

    def make(i: int) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if args:
                h, call = args[0], BlockCall(tuple(args[1:]), dict(kwargs), False)
            else:
                rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                h, call = kwargs["hidden_states"], BlockCall((), rest, True)
            if i == target:
                got["target"] = h.detach()
                raise StopForward
            if i == source:
                got["source"] = h.detach()
            calls[i] = call

        return hook

    with scoped_hooks() as hs:
        for i in range(source, target + 1):
            hs.raw_pre(blocks[i], make(i))
        with torch.no_grad(), contextlib.suppress(StopForward):
            model(**forward_kwargs(batch))
    missing = [i for i in range(source, target) if i not in calls]
    if missing or "target" not in got:
        raise RuntimeError(
            f"the forward pass did not reach blocks {missing or [target]}: is this a decoder "
            "whose blocks run in order?"
        )
    return got["source"], got["target"], [calls[i] for i in range(source, target)]


def capture_prefix(
    model: nn.Module,
    blocks: nn.ModuleList,
    batch: Batch,
    source: int,
    target: int,
    k: int,
) -> PrefixCache:
    """Run the stock model once on ``batch`` and record what blocks ``source..target-1`` need.

    Args:
        model: the stock HF model (its own hooks, if any, run as usual).
        blocks: its ``ModuleList`` of decoder blocks.
        batch: a left-padded batch of B prompts, on the model's device.
        source: ``S``, where the vectors are added (input of block S).
        target: ``T > S``, where the change is read (input of block T, ``T < n_layers``).
        k: number of vectors trained together.

    Returns:
        A :class:`PrefixCache` whose calls take ``(k * B, T, D)`` hidden states.
    """
    src, tgt, calls = _record(model, blocks, batch, source, target)
    rows = int(src.shape[0])
    memo: dict[int, torch.Tensor] = {}  # the originals stay alive in ``calls`` meanwhile
    try:
        return PrefixCache(src, tgt, [c.repeated(rows, k, memo) for c in calls], k)
    except _Unbatchable:
        rep = Batch(
            batch.input_ids.repeat(k, 1),
            batch.attention_mask.repeat(k, 1),
            batch.instruction_end.repeat(k),
            list(batch.texts) * k,
        )
        _, _, calls_k = _record(model, blocks, rep, source, target)
        return PrefixCache(src, tgt, calls_k, k)


def run_slice(
    blocks: Sequence[nn.Module], calls: Sequence[BlockCall], h: torch.Tensor
) -> torch.Tensor:
    """Blocks ``S..T-1`` on ``h`` (the input of block S), with the recorded arguments.

    Returns:
        ``resid_pre[T]`` for ``h``, same shape.
    """
    for block, call in zip(blocks, calls, strict=True):
        h = call(block, h)
    return h


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients while open; every flag restored on exit.

    Nothing else is touched: parameters are never written, and gradients flow only to the
    steering vectors.
    """
    grads = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        for m, _ in modes:
            m.training = False
        yield
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
