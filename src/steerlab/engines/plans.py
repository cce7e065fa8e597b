"""What the vLLM engine installs in its workers: the ops of a treatment (:mod:`steerlab.
interventions.ops`) checked for what the worker hooks can repeat exactly (:func:`plan_for`),
and several groups' plans merged into one (:func:`merge_plans`). Plain dicts of CPU tensors:
they travel to every worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import SteerlabError
from ..interventions.ops import Op, op_key
from ..models.chat import PromptFormat, prompted

__all__ = ["EngineError", "merge_plans", "plan_for", "prompt_tokenizer", "split_coeffs"]


class EngineError(SteerlabError):
    """The vLLM engine cannot run this model or repeat this treatment exactly."""


_WHY = {
    "lora": "a LoRA adapter applied at run time (merge and save it, then load that)",
    "rows": "per-row treatments inside one treatment (give one treatment per row instead)",
}


def plan_for(ops: Sequence[Op], *, sandwich: bool = False) -> list[Op]:
    """The worker plan for ``ops``: hook ops as they are, weight edits as the hooks they equal;
    refuses what the worker hooks cannot repeat exactly. Prompt ops are not the workers'
    (the engine renders prompts with them: :func:`prompt_tokenizer`)."""
    plan: list[Op] = []
    for op in ops:
        kind = op["kind"]
        if kind == "add":
            if op["positions"] != "all":
                raise EngineError(
                    f"steering restricted to {op['positions']!r} tokens cannot be repeated in "
                    "vLLM (its batches mix prompt and decode tokens); use positions='all' or "
                    "--engine hf"
                )
            plan.append(op)
        elif kind in ("ablate", "clamp"):
            plan.append(op)
        elif kind == "orthogonalize":
            if sandwich:
                # post-normed sublayers: orthogonalized weights remove the direction but do
                # not compute what ablation hooks compute (see interventions/weights.py)
                raise EngineError(
                    "orthogonalized weights of a sandwich-norm model cannot be repeated by "
                    "hooks in vLLM; export the edited model and load that, or use --engine hf"
                )
            # orthogonalized weights compute exactly what ablation hooks compute (the edit's
            # equivalence); vLLM's tied embeddings cannot be edited apart from its head
            whole = {"kind": "ablate", "vectors": op["vectors"], "layers": "all", "writes": True}
            plan.append(whole)
        elif kind == "bake_steer":  # a bias that adds the vector at every position
            plan.append(
                {
                    "kind": "add",
                    "vector": op["vector"],
                    "layers": [op["layer"]],
                    "coeff": op["coeff"],
                    "site": op["site"],
                    "positions": "all",
                }
            )
        elif kind == "prompt":
            continue
        else:
            why = _WHY.get(kind, f"the treatment {kind!r}")
            raise EngineError(f"vLLM cannot repeat {why}; use --engine hf")
    return plan


def prompt_tokenizer(tokenizer: Any, ops: Sequence[Op]) -> Any:
    """``tokenizer`` rendering prompts as the treatment's prompt ops do, in order (what
    entering each ``PromptPrefix`` yields on the Hugging Face side)."""
    for op in ops:
        if op["kind"] == "prompt":
            shots = tuple((str(u), str(a)) for u, a in op["shots"])
            fmt = PromptFormat(op["system"], shots, op["prefix"], op["suffix"])
            tokenizer = prompted(tokenizer, fmt)
    return tokenizer


def split_coeffs(plan: Sequence[Op]) -> tuple[list[Op], list[float | None]]:
    """``plan`` with each ``add`` op's coefficient taken out, and those coefficients (None at
    the other ops' places).

    The shape is what the workers install: requests whose plans differ only in their
    coefficients share one request group (one install), each carrying its own coefficients
    (``SamplingParams.extra_args["steerlab_coeffs"]``). An op without a coefficient
    (``"coeff": None``) reads it, per token, at its place ``"coeff_at"`` in the request's list.
    """
    shape: list[Op] = []
    coeffs: list[float | None] = []
    for j, op in enumerate(plan):
        if op["kind"] == "add" and op["coeff"] is not None:
            shape.append({**op, "coeff": None, "coeff_at": j})
            coeffs.append(float(op["coeff"]))
        else:
            shape.append(op)
            coeffs.append(None)
    return shape, coeffs


def merge_plans(
    plans: Sequence[list[Op]], ids: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """One worker plan for several groups: each op once, tagged with the groups it serves
    (``ids``: each plan's group id; default its index).

    An op is shared only between groups that hold it at the same place in their plans, so
    every group's ops still run in its own order (ops of different groups touch different
    tokens and commute)."""
    merged: dict[Any, dict[str, Any]] = {}
    for g, plan in zip(range(len(plans)) if ids is None else ids, plans, strict=True):
        for j, op in enumerate(plan):
            k = (j, op_key(op))
            if k in merged:
                merged[k]["groups"].append(g)
            else:
                merged[k] = {**op, "groups": [g]}
    return [merged[k] for k in sorted(merged, key=lambda k: k[0])]
