"""The compared methods as objects: what data each needs, the candidates it chooses among on the
selection split, and the treatment (an :class:`~steerlab.interventions.Intervention`) each
candidate is:

* steering (``mean_diff``, ``pca``, ``random``): a unit vector per layer from the N pairs'
  activations, a :class:`~steerlab.interventions.Steer` at a layer and strength;
* prompting: a :class:`~steerlab.interventions.PromptPrefix` (zero-shot instruction, system
  prompt, few-shot demonstrations, contrast prompt), one candidate;
* finetuning (``lora``, ``dpo``): a LoRA adapter trained on the N pairs, one candidate per
  checkpoint (:class:`~steerlab.finetune.TrainedLoRA`);
* stacking (``few_shot+mean_diff``, ``lora+mean_diff``): :class:`~steerlab.interventions.Compose`
  of the base method's chosen treatment and steering.

:data:`REGISTRY` holds one object per name of :data:`~.config.METHODS`, in report order (a
stacked method after its base); the pipeline runs them all the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from ..evaluate.norms import random_units
from ..finetune import TrainedLoRA, lora_config, target_modules
from ..interventions import Compose, Intervention, LoRA, NoOp, PromptPrefix, Steer
from ..models.chat import encode
from .config import METHODS
from .finetune import train_lora

if TYPE_CHECKING:
    from .state import Compare

__all__ = [
    "REGISTRY",
    "Candidate",
    "Draw",
    "Fit",
    "Method",
    "contrast_prompt",
    "few_shot",
    "fit_direction",
    "system_prompt",
    "zero_shot",
]

Pair3 = tuple[str, str, str]  # (prompt, positive reply, negative reply)


def fit_direction(method: str, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Unit direction from paired activations (N, D) at one layer.

    ``mean_diff``: the difference of the class means (ActAdd / CAA). ``pca``: the top right
    singular vector of the paired differences (RepE LAT, uncentered, so that one pair gives
    its own difference), signed to agree with the mean difference.
    """
    diffs = (pos - neg).double()
    md = diffs.mean(0)
    if method == "mean_diff":
        v = md
    elif method == "pca":
        _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
        v = vh[0] if float(vh[0] @ md) >= 0 else -vh[0]
    else:
        raise ValueError(f"no direction method {method!r}")
    return (v / v.norm().clamp_min(1e-12)).float()


def zero_shot(description: str) -> PromptPrefix:
    """The behaviour's one-line description put before the user's message."""
    return PromptPrefix(prefix=f"{description.strip()}\n\n", name="zero_shot")


def system_prompt(description: str) -> PromptPrefix:
    """The behaviour's description as the system message."""
    return PromptPrefix(system=description.strip(), name="system_prompt")


def _fits(lm: Any, make: Any, k: int, max_context: int, probe: str) -> bool:
    with make(k).applied(lm) as view:
        n = int(encode(view.tokenizer, [probe]).attention_mask.sum())
    return n <= max_context


def _most_that_fit(lm: Any, make: Any, n: int, max_context: int, probe: str) -> int:
    """The largest k <= n whose prompt for ``probe`` stays within ``max_context`` tokens."""
    lo, hi = 0, n
    while lo < hi:  # prompt length grows with k: binary search
        mid = (lo + hi + 1) // 2
        if _fits(lm, make, mid, max_context, probe):
            lo = mid
        else:
            hi = mid - 1
    return lo


def few_shot(
    lm: Any, pairs: Sequence[Pair3], max_context: int, longest: str
) -> tuple[PromptPrefix, int]:
    """The pairs' prompts and positive replies as earlier turns of the conversation, as many
    as fit in ``max_context`` tokens with the ``longest`` evaluation prompt; returns the
    treatment and the count used."""

    def make(k: int) -> PromptPrefix:
        return PromptPrefix(shots=tuple((p, a) for p, a, _ in pairs[:k]), name="few_shot")

    k = _most_that_fit(lm, make, len(pairs), max_context, longest)
    return make(k), k


def contrast_prompt(
    lm: Any, pairs: Sequence[Pair3], max_context: int, longest: str
) -> tuple[PromptPrefix, int]:
    """Each pair as ``Question / Good response / Bad response``, then the user's message and
    ``Good response:`` (in the same turn), as many pairs as fit."""

    def make(k: int) -> PromptPrefix:
        blocks = [f"Question: {p}\nGood response: {a}\nBad response: {b}" for p, a, b in pairs[:k]]
        head = "\n\n".join(blocks)
        return PromptPrefix(
            prefix=(f"{head}\n\n" if head else "") + "Question: ",
            suffix="\nGood response:",
            name="contrast_prompt",
        )

    k = _most_that_fit(lm, make, len(pairs), max_context, longest)
    return make(k), k


# -- the registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Draw:
    """One unit of a comparison: draw ``draw`` at ``n`` training pairs (None: no example)."""

    n: int | None
    draw: int
    idx: list[int] = field(default_factory=list)  # the pool indices of its pairs
    pairs: list[Pair3] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    """A configuration a method may run with and the treatment it is.

    ``label`` is recorded in ``chosen`` and the selection list, ``notes`` only in the list,
    ``info`` with the test run when this candidate is chosen."""

    label: dict[str, Any]
    treatment: Intervention
    notes: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fit:
    """A method fitted for one draw: its candidates, and what its test run records."""

    candidates: list[Candidate]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A compared method.

    Attributes:
        needs: ``none`` (measured once per draw, shown at every N) or ``pairs`` (the draw's N).
        selects: choose among candidates on the selection split (by the sweep's rule).
        fixed: no example and no randomness: draw 0's measurement stands for every draw.
        family: methods of one family that run at one draw are measured as rows of one batch.
        stacks_on: the method whose chosen treatment this one composes with steering.
    """

    name: str
    candidates: Callable[[Compare, Draw, Any], Fit]
    needs: Literal["none", "pairs"] = "pairs"
    selects: bool = False
    fixed: bool = False
    family: str | None = None
    stacks_on: str | None = None


def _steer_grid(c: Compare, units: dict[int, torch.Tensor], base: Intervention | None) -> list:
    out = []
    for lay in c.layers:
        for coeff in c.cfg.coeffs:
            s = Steer(units[lay], layers=lay, coeff=coeff * c.norms[lay], name="steer")
            t = s if base is None else Compose((base, s), name="stacked")
            out.append(Candidate({"layer": lay, "coeff": coeff}, t))
    return out


def _units(c: Compare, method: str, idx: Sequence[int]) -> dict[int, torch.Tensor]:
    """A unit direction per layer from the draw's pairs' cached activations."""
    acts = c.acts
    return {
        lay: fit_direction(method, acts["pos"][idx, i], acts["neg"][idx, i])
        for i, lay in enumerate(c.layers)
    }


def _steering(method: str) -> Callable[[Compare, Draw, Any], Fit]:
    def candidates(c: Compare, d: Draw, _base: Any) -> Fit:
        grid = _steer_grid(c, _units(c, method, d.idx), None)
        return Fit(grid, {"fit_seconds": c.per_pair * 2 * len(d.idx)})  # its share of capture

    return candidates


def _random(c: Compare, d: Draw, _base: Any) -> Fit:
    units = random_units(c.lm.info.d_model, c.layers, c.cfg.seed * 1000 + d.draw + 1)
    return Fit(_steer_grid(c, units, None))


def _fixed_prompt(make: Callable[[str], Intervention]) -> Callable[[Compare, Draw, Any], Fit]:
    def candidates(c: Compare, _d: Draw, _base: Any) -> Fit:
        t = make(c.behavior.description or "")
        return Fit([Candidate({}, t)], {"treatment": t.spec()})

    return candidates


def _shown(make: Callable[..., tuple[PromptPrefix, int]]) -> Callable[[Compare, Draw, Any], Fit]:
    def candidates(c: Compare, d: Draw, _base: Any) -> Fit:
        t0 = time.perf_counter()
        treat, used = make(c.lm, d.pairs, c.cfg.max_context, c.longest)
        info = {
            "fit_seconds": time.perf_counter() - t0,
            "examples_used": used,
            "treatment": treat.spec() | {"shots": used},
        }
        return Fit([Candidate({}, treat)], info)

    return candidates


def _train(
    c: Compare, d: Draw, objective: Literal["sft", "dpo"], lr: float, seed: int
) -> tuple[Any, list[Any]]:
    """One LoRA trained on the draw's pairs at ``lr``: its config and checkpoints."""
    cfg, n = c.cfg, len(d.pairs)
    torch.manual_seed(seed)  # the adapter's A matrices: the same start for every lr
    conf = lora_config(cfg.lora_rank, target_modules(c.lm.model))
    # a DPO example is two sequences: half as many pairs per step as SFT takes replies,
    # so both objectives process the same number of sequences per step
    batch = cfg.train_batch if objective == "sft" else max(1, cfg.train_batch // 2)
    lora = LoRA(config=conf, trainable=True)
    label = f"{objective} on {n} pairs, lr {lr:g}"
    with lora.applied(c.lm) as t, c.run.bar(label, cfg.lora_steps) as adv:
        cks = train_lora(
            t,
            t.extra["peft_model"],
            d.pairs,
            objective=objective,
            steps=cfg.lora_steps,
            lr=lr,
            batch=batch,
            checkpoints=cfg.checkpoints,
            beta=cfg.dpo_beta,
            seed=seed,
            chat=cfg.chat,
            progress=adv,
        )
    return conf, cks


def _finetuned(objective: Literal["sft", "dpo"]) -> Callable[[Compare, Draw, Any], Fit]:
    def candidates(c: Compare, d: Draw, _base: Any) -> Fit:
        """A LoRA trained on the draw's pairs at every learning rate; the checkpoints of all
        are the candidates (learning rate x steps, as steering has layer x strength)."""
        cfg, n = c.cfg, len(d.pairs)
        seed = cfg.seed * 1_000_003 + d.draw * 1009 + n + (0 if objective == "sft" else 7)
        lrs = cfg.lora_lrs if objective == "sft" else cfg.dpo_lrs
        grid, spent, conf = [], 0.0, None
        for lr in lrs:  # type: ignore[union-attr]
            conf, cks = _train(c, d, objective, lr, seed)
            grid += [
                Candidate(
                    {"lr": lr, "step": ck.step},
                    TrainedLoRA(conf, ck.state),
                    notes={"loss": ck.loss},
                    info={"fit_seconds": spent + ck.seconds},
                )
                for ck in cks
            ]
            spent += cks[-1].seconds
        assert conf is not None
        batch = cfg.train_batch if objective == "sft" else max(1, cfg.train_batch // 2)
        hyper = {
            "objective": objective,
            "rank": cfg.lora_rank,
            "alpha": 2 * cfg.lora_rank,
            "target_modules": list(conf.target_modules),
            "steps": cfg.lora_steps,
            "batch": min(batch, n),
            "lrs": list(lrs),  # type: ignore[arg-type]
            **({"beta": cfg.dpo_beta} if objective == "dpo" else {}),
            "optimizer": "AdamW",
            "checkpoints": sorted({k.label["step"] for k in grid}),
        }
        # every learning rate's training counts, whichever checkpoint is chosen
        for k in grid:
            k.info["fit_seconds"] = spent
        return Fit(grid, {"train_seconds": spent, "hyperparameters": hyper})

    return candidates


def _stacked(carry: dict[str, str]) -> Callable[[Compare, Draw, Any], Fit]:
    """Mean-difference steering on top of the base method's chosen treatment; ``carry`` names
    fields of the base's record this one repeats (as ``{own name: base's name}``)."""

    def candidates(c: Compare, d: Draw, base: Any) -> Fit:
        grid = _steer_grid(c, _units(c, "mean_diff", d.idx), base.treatment)
        info = {"fit_seconds": base.record["fit_seconds"] + c.per_pair * 2 * len(d.idx)}
        return Fit(grid, info | {k: base.record[v] for k, v in carry.items()})

    return candidates


_ALL = [
    Method("unsteered", _fixed_prompt(lambda _d: NoOp()), needs="none", fixed=True),
    Method("mean_diff", _steering("mean_diff"), selects=True, family="steer"),
    Method("pca", _steering("pca"), selects=True, family="steer"),
    Method("random", _random, needs="none", selects=True),
    # one candidate each: selection only says whether it keeps to the fluency bound
    Method("zero_shot", _fixed_prompt(zero_shot), needs="none", selects=True, fixed=True),
    Method("system_prompt", _fixed_prompt(system_prompt), needs="none", selects=True, fixed=True),
    Method("few_shot", _shown(few_shot), selects=True),
    Method("contrast_prompt", _shown(contrast_prompt), selects=True),
    Method("lora", _finetuned("sft"), selects=True),
    Method("dpo", _finetuned("dpo"), selects=True),
    Method("lora+mean_diff", _stacked({"adapter": "chosen"}), selects=True, stacks_on="lora"),
    Method(
        "few_shot+mean_diff",
        _stacked({"examples_used": "examples_used"}),
        selects=True,
        stacks_on="few_shot",
    ),
]
REGISTRY: dict[str, Method] = {m.name: m for m in _ALL}
assert tuple(REGISTRY) == METHODS, "the registry and config.METHODS list the same methods"
