"""What is applied to a model right now, in a form another engine can repeat.

Every runtime treatment that changes a stock model (hooks or weights) records an *op* here for
as long as it is applied. An engine that runs the same weights elsewhere (vLLM, in its own
worker processes) reads :func:`active_ops` before it generates and repeats each op there, or
refuses when it cannot repeat one exactly; the model itself is never inspected for hooks.

Ops are plain dicts of CPU float32 tensors and numbers:

* ``{"kind": "add", "deltas": {layer: (D,)}, "site": "resid_pre"|"resid_post",
  "positions": "all"|"generated"}``;
* ``{"kind": "ablate", "unit": (D,)}`` (every block input and sublayer write), or for several
  directions ``{"kind": "ablate", "basis": (K, D) orthonormal rows, "k": K}`` (the span);
* ``{"kind": "clamp", "unit": (D,), "value": x, "layers": [...]}``;
* ``{"kind": "orthogonalize", "unit": (D,)}`` (or ``"basis"`` and ``"k"``, as ablate);
  ``{"kind": "per_row"}``, ``{"kind": "lora"}`` and anything else an engine does not know:
  it must refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from weakref import WeakKeyDictionary

from torch import nn

__all__ = ["active_ops", "recorded"]

_ACTIVE: WeakKeyDictionary[nn.Module, list[dict[str, Any]]] = WeakKeyDictionary()


@contextmanager
def recorded(model: nn.Module, op: dict[str, Any]) -> Iterator[None]:
    """Record ``op`` as applied to ``model`` while the context is open."""
    ops = _ACTIVE.setdefault(model, [])
    ops.append(op)
    try:
        yield
    finally:
        for i in range(len(ops) - 1, -1, -1):  # by identity: equal ops may be stacked
            if ops[i] is op:
                del ops[i]
                break


def active_ops(model: nn.Module) -> list[dict[str, Any]]:
    """The ops applied to ``model`` now, outermost first."""
    return list(_ACTIVE.get(model, []))
