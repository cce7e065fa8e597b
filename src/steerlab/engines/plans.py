"""What the vLLM engine installs in its workers: the applied treatments as a worker plan
(:func:`plan_for`, refusing what the hooks cannot repeat exactly) and several groups' plans
merged into one (:func:`merge_plans`). Plain dicts of CPU tensors: they travel to every worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import SteerlabError
from ..interventions.per_row import RowSetting

__all__ = ["EngineError", "merge_plans", "plan_for"]


class EngineError(SteerlabError):
    """The vLLM engine cannot run this model or repeat this treatment exactly."""


def plan_for(ops: Sequence[dict[str, Any]], setting: RowSetting | None = None) -> list[dict]:
    """The worker plan for the ops applied now plus one per-row ``setting``; refuses what the
    worker hooks cannot repeat exactly."""
    plan: list[dict[str, Any]] = []
    for op in ops:
        kind = op["kind"]
        if kind == "add":
            if op["positions"] != "all":
                raise EngineError(
                    "steering restricted to generated tokens cannot be repeated in vLLM (its "
                    "batches mix prompt and decode tokens); use positions='all' or --engine hf"
                )
            plan.append({k: op[k] for k in ("kind", "deltas", "site")})
        elif kind in ("ablate", "orthogonalize"):
            # orthogonalized weights compute exactly what ablation hooks compute (the edit's
            # equivalence); vLLM's tied embeddings cannot be edited apart from its head.
            # A span has orthonormal rows: removing them one after the other removes the span.
            units = list(op["basis"]) if "basis" in op else [op["unit"]]
            plan.extend({"kind": "ablate", "unit": u} for u in units)
        elif kind == "clamp":
            plan.append({k: op[k] for k in ("kind", "unit", "value", "layers")})
        else:
            why = {
                "lora": "a LoRA adapter applied at run time (merge and save it, then load that)",
                "per_row": "per-row steering applied around the call",
                "steer_rows": "per-row steering applied around the call",
            }.get(kind, f"the treatment {kind!r}")
            raise EngineError(f"vLLM cannot repeat {why}; use --engine hf")
    if setting is not None and (setting.add or setting.ablate):
        if setting.positions != "all":
            raise EngineError(
                f"a setting on {setting.positions!r} positions cannot be repeated in vLLM; "
                "use positions='all' or --engine hf"
            )
        if setting.ablate:
            units = {k: v.detach().float().cpu() for k, v in setting.ablate.items()}
            plan.append({"kind": "project", "units": units})
        if setting.add:
            deltas = {k: v.detach().float().cpu() for k, v in setting.add.items()}
            plan.append({"kind": "add", "deltas": deltas, "site": "resid_pre"})
    return plan


def _key(x: Any) -> Any:
    """A hashable content key of an op (tensors by their bytes)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().float().cpu().contiguous()
        return ("T", tuple(t.shape), hashlib.sha1(t.numpy().tobytes()).hexdigest())
    if isinstance(x, dict):
        return tuple(sorted((str(k), _key(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_key(v) for v in x)
    return x


def merge_plans(plans: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One worker plan for several groups: each op once, tagged with the groups it serves.

    An op is shared only between groups that hold it at the same place in their plans, so
    every group's ops still run in its own order (ops of different groups touch different
    tokens and commute)."""
    merged: dict[Any, dict[str, Any]] = {}
    for g, plan in enumerate(plans):
        for j, op in enumerate(plan):
            k = (j, _key(op))
            if k in merged:
                merged[k]["groups"].append(g)
            else:
                merged[k] = {**op, "groups": [g]}
    return [merged[k] for k in sorted(merged, key=lambda k: k[0])]
