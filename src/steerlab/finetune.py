"""One LoRA finetuning loop for every adapter steerlab trains: compare's SFT and DPO baselines
and the backdoored organism.

The adapter is injected by :class:`~steerlab.interventions.LoRA` (``trainable=True``), which
puts the model back on exit; this module only optimises what is trainable in it. A caller
brings its objective as ``loss_fn(batch indices) -> loss`` and its batch order; the loop owns
the optimizer (AdamW, no weight decay), the optional linear decay and gradient clipping, the
check that the loss stays finite, and copies of the adapter weights at chosen steps.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .errors import SteerlabError
from .interventions.lora import LoRA
from .models.load import LoadedModel

__all__ = [
    "Checkpoint",
    "Trained",
    "TrainedLoRA",
    "epoch_batches",
    "load_checkpoint",
    "lora_config",
    "stream_batches",
    "target_modules",
    "train_adapter",
]


@dataclass
class Checkpoint:
    """Adapter weights after ``step`` optimizer steps, and the mean training loss so far."""

    step: int
    state: dict[str, torch.Tensor]
    loss: float
    seconds: float  # training time up to this step (checkpoint copies excluded)


@dataclass
class Trained:
    """What :func:`train_adapter` returns: the loss of every step and the checkpoints asked for."""

    losses: list[float]
    checkpoints: list[Checkpoint] = field(default_factory=list)


def lora_config(rank: int, modules: Sequence[str] | str, *, alpha: int | None = None) -> Any:
    """A ``peft.LoraConfig`` without dropout or biases; ``alpha`` defaults to ``2 * rank``;
    ``modules`` may be peft's ``"all-linear"``."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank if alpha is None else alpha,
        lora_dropout=0.0,
        target_modules=modules if isinstance(modules, str) else list(modules),
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


def stream_batches(n: int, batch: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` batches of ``min(batch, n)`` indices cut from a stream of seeded permutations
    (every example once before any twice; every batch full)."""
    g = torch.Generator().manual_seed(seed)
    b = min(batch, n)
    order: list[int] = []
    while len(order) < steps * b:
        order += torch.randperm(n, generator=g).tolist()
    return [order[i * b : (i + 1) * b] for i in range(steps)]


def epoch_batches(n: int, batch: int, epochs: int, seed: int) -> list[list[int]]:
    """``epochs`` seeded shuffles of ``range(n)``, each cut into batches (the last may be
    short)."""
    rng = random.Random(seed)
    out = []
    for _ in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        out += [order[i : i + batch] for i in range(0, n, batch)]
    return out


def train_adapter(
    model: torch.nn.Module,
    batches: Sequence[Sequence[int]],
    loss_fn: Callable[[Sequence[int]], torch.Tensor],
    *,
    lr: float,
    schedule: Literal["constant", "linear"] = "constant",
    clip: float | None = None,
    checkpoints: Sequence[int] = (),
    peft_model: Any = None,
    progress: Callable[[int], None] | None = None,
) -> Trained:
    """One AdamW step per batch on the trainable parameters of ``model``.

    Args:
        batches: the example indices of each step, in order (see :func:`stream_batches`,
            :func:`epoch_batches`).
        loss_fn: the objective on one batch's indices.
        schedule: ``linear`` decays the learning rate to 0 over the steps.
        clip: the maximal gradient norm (None: no clipping).
        checkpoints: steps after which the adapter weights of ``peft_model`` are copied.

    Raises:
        SteerlabError: the loss became NaN or infinite (the message says to lower the rate).
    """
    from peft import get_peft_model_state_dict

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    total = len(batches)
    sched = (
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / max(total, 1))
        if schedule == "linear"
        else None
    )
    at = set(checkpoints)
    out = Trained([])
    spent = 0.0
    was_training = model.training
    model.train()  # dropout is 0 in the adapter; train() only for modules that care
    try:
        for step, idx in enumerate(batches, start=1):
            t0 = time.perf_counter()
            loss = loss_fn(idx)
            if not math.isfinite(float(loss.detach())):
                raise SteerlabError(
                    f"the LoRA loss became {float(loss.detach())} at step {step - 1}; "
                    "lower the learning rate"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            if sched is not None:
                sched.step()
            out.losses.append(float(loss.detach()))
            spent += time.perf_counter() - t0
            if progress:
                progress(1)
            if step in at:
                state = {
                    k: v.detach().clone().cpu()
                    for k, v in get_peft_model_state_dict(peft_model).items()
                }
                mean = float(sum(out.losses) / len(out.losses))
                out.checkpoints.append(Checkpoint(step, state, mean, spent))
    finally:
        model.train(was_training)
        opt.zero_grad(set_to_none=True)
    return out


def load_checkpoint(peft_model: Any, ck: Checkpoint) -> None:
    """Put a checkpoint's adapter weights back into ``peft_model``."""
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(peft_model, ck.state)


@dataclass(frozen=True, eq=False)  # tensor fields: identity, not elementwise ==
class TrainedLoRA:
    """An adapter trained in this process (a :class:`Checkpoint`'s weights) as an intervention:
    injected with :class:`~steerlab.interventions.LoRA` and given these weights while the
    context is open, unloaded on exit.

    Args:
        config: the ``peft.LoraConfig`` it was trained with.
        state: the adapter weights (``Checkpoint.state``).
    """

    config: Any
    state: dict[str, torch.Tensor]
    name: str = "lora"

    def spec(self) -> dict[str, Any]:
        h = hashlib.sha256()
        for k in sorted(self.state):
            h.update(k.encode())
            h.update(self.state[k].detach().float().cpu().contiguous().numpy().tobytes())
        return LoRA(config=self.config).spec() | {"weights_sha256": h.hexdigest()[:16]}

    def ops(self) -> list[dict[str, Any]]:
        return LoRA(config=self.config, state=self.state).ops()

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        # peft may write into the config it injects with: each use gets its own copy
        with LoRA(config=copy.deepcopy(self.config), state=self.state).applied(lm) as treated:
            yield treated
