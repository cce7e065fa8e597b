"""What a treatment does, as plain data: the *ops* of an :class:`~steerlab.interventions.
Intervention`.

``Intervention.ops()`` is pure (no model needed) and returns a list of dicts of numbers, strings
and CPU tensors. Executors read only these: the hooks on a Hugging Face model
(:mod:`.execute`), the per-row engine (the same hooks, one row mask per op) and vLLM's workers
(:mod:`steerlab.engines.vllm_worker`); :func:`from_ops` rebuilds an intervention that applies
identically. Vectors are kept as given (float32), and every executor derives units and bases
from them with the same functions (:mod:`.vectors`), so each computes the same numbers.

Kinds:

* ``{"kind": "add", "vector": (D,) | {layer: (D,)}, "layers": spec, "coeff": c, "site":
  "resid_pre"|"resid_post", "positions": "all"|"prompt"|"generated"}``: ``h + c v`` at each
  layer (``layers``: an int, a list, ``"all"`` or ``"A:B"``, resolved against the model);
* ``{"kind": "ablate", "vectors": (K, D), "layers": "all"|[...], "writes": bool}``: the span of
  the rows (orthonormalized in order) projected out of each block's input and, with ``writes``,
  out of what its attention and MLP write into the residual;
* ``{"kind": "clamp", "vector": (D,), "value": x, "layers": spec}``: the projection on the unit
  vector pinned to ``x`` at each block's input;
* ``{"kind": "rows", "rows": [[op, ...], ...]}``: row ``i`` of every batch gets ``rows[i]``
  (hook kinds only);
* ``{"kind": "orthogonalize", "vectors": (K, D), "layer": ..., "spill_dir": ...}``,
  ``{"kind": "bake_steer", ...}``, ``{"kind": "prompt", ...}``, ``{"kind": "lora", ...}``:
  treatments that edit weights, the prompt or the module tree (applied by their own classes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["HOOK_KINDS", "Op", "op_key", "touches_prompt"]

Op = dict[str, Any]
HOOK_KINDS = ("add", "ablate", "clamp")
_PREFILL = ("all", "prompt")


def op_key(x: Any) -> Any:
    """A hashable content key of an op (tensors by their bytes): equal keys apply identically."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        return ("T", str(t.dtype), tuple(t.shape), hashlib.sha1(t.numpy().tobytes()).hexdigest())
    if isinstance(x, dict):
        return tuple(sorted((str(k), op_key(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(op_key(v) for v in x)
    return x


def touches_prompt(ops: Sequence[Op]) -> bool:
    """Whether the prompt's own forward differs from the untreated model's under ``ops``."""
    for op in ops:
        kind = op["kind"]
        if kind == "rows":
            if any(touches_prompt(r) for r in op["rows"]):
                return True
        elif kind != "add" or op["positions"] in _PREFILL:
            return True
    return False
