"""The one treatment abstraction: an :class:`Intervention` is applied to a loaded model inside a
context and undone on every exit.

Every pipeline (refusal variants, MELBO completions, the organism's LoRA, the baselines that
compare steering with prompting and finetuning) expresses what it does to the model as
interventions, so the same code measures all of them and every report can say exactly what was
applied (:meth:`Intervention.spec`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from ..directions.artifact import Direction
from ..models.load import LoadedModel

__all__ = ["Compose", "Intervention", "NoOp", "apply", "vector_spec"]


@runtime_checkable
class Intervention(Protocol):
    """A treatment of a model.

    Attributes:
        name: a short label for reports (``"steer"``, ``"ablate"``, ``"prompt"``...).
    """

    name: str

    def ops(self) -> list[dict[str, Any]]:
        """What it does, as plain data (:mod:`steerlab.interventions.ops`): pure, no model
        needed; every executor (HF hooks, the per-row engine, vLLM's workers) reads only this,
        and :func:`~steerlab.interventions.from_ops` rebuilds one that applies identically."""
        ...

    def spec(self) -> dict[str, Any]:
        """A short JSON-able description for reports: what is applied, where, how strongly
        (vectors by norm and hash)."""
        ...

    def applied(self, lm: LoadedModel) -> AbstractContextManager[LoadedModel]:
        """A context that yields the model with the treatment in effect.

        The yielded :class:`~steerlab.models.LoadedModel` may be ``lm`` itself (hooks, in-place
        weight edits) or a view of it (another tokenizer view for prompting). On exit, normal
        or not, ``lm`` is exactly as it was: parameters, hooks, config, modes.
        """
        ...


def vector_spec(vec: torch.Tensor | Direction, layer: int | None = None) -> dict[str, Any]:
    """How a vector is named in a spec: its norm and a short hash of its float32 bytes."""
    if isinstance(vec, Direction):
        one = layer in vec.layers or (layer is None and len(vec.layers) == 1)
        v = vec.vector(layer if layer in vec.layers else None) if one else vec.vectors
        made = vec.meta.get("method")
    else:
        v, made = vec, None
    t = v.detach().float().cpu().contiguous()
    out: dict[str, Any] = {
        "norm": round(float(t.norm()), 6),
        "sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16],
    }
    if made:
        out["method"] = made
    return out


@dataclass(frozen=True)
class NoOp:
    """No treatment: the unchanged model (the baseline every effect is measured against)."""

    name: str = "none"

    def ops(self) -> list[dict[str, Any]]:
        return []

    def spec(self) -> dict[str, Any]:
        return {"kind": "none"}

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        yield lm


@dataclass(frozen=True, eq=False)
class Compose:
    """Several interventions at once, entered in order (each sees the model the previous one
    yielded) and undone in reverse order."""

    items: tuple[Intervention, ...]
    name: str = "compose"

    def ops(self) -> list[dict[str, Any]]:
        return [op for i in self.items for op in i.ops()]

    def spec(self) -> dict[str, Any]:
        return {"kind": "compose", "items": [i.spec() for i in self.items]}

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        with ExitStack() as stack:
            for item in self.items:
                lm = stack.enter_context(item.applied(lm))
            yield lm


def apply(
    lm: LoadedModel, interventions: Intervention | Sequence[Intervention] | None
) -> AbstractContextManager[LoadedModel]:
    """``with apply(lm, [Steer(...), PromptPrefix(...)]) as treated:`` - none, one or several."""
    if interventions is None:
        return NoOp().applied(lm)
    if isinstance(interventions, Intervention):
        return interventions.applied(lm)
    return Compose(tuple(interventions)).applied(lm)
