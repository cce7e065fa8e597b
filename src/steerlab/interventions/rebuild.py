"""From ops back to an intervention: :func:`from_ops` (the inverse of ``Intervention.ops()``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import VectorError
from .base import Compose, NoOp
from .bias import BakeSteer
from .lora import LoRA
from .ops import Op
from .orthogonal import Orthogonalize
from .per_row import PerRow
from .prompting import PromptPrefix
from .treatments import Ablate, Clamp, Steer

__all__ = ["from_ops"]


def _one(op: Op) -> Any:
    kind = op.get("kind")
    if kind == "add":
        return Steer(
            op["vector"],
            layers=op["layers"],
            coeff=op["coeff"],
            positions=op["positions"],
            site=op["site"],
        )
    if kind == "ablate":
        return Ablate(op["vectors"], layers=op["layers"], writes=op["writes"])
    if kind == "clamp":
        return Clamp(op["vector"], op["value"], layers=op["layers"])
    if kind == "rows":
        return PerRow([from_ops(r) for r in op["rows"]])
    if kind == "orthogonalize":
        return Orthogonalize(op["vectors"], spill_dir=op.get("spill_dir"))
    if kind == "bake_steer":
        return BakeSteer(op["vector"], layer=op["layer"], coeff=op["coeff"], site=op["site"])
    if kind == "prompt":
        return PromptPrefix(
            system=op["system"],
            shots=tuple(tuple(s) for s in op["shots"]),
            prefix=op["prefix"],
            suffix=op["suffix"],
        )
    if kind == "lora":
        return LoRA(
            path=op.get("path"),
            config=op.get("config"),
            trainable=op["trainable"],
            state=op.get("state"),
        )
    raise VectorError(f"no intervention has the op kind {kind!r}")


def from_ops(ops: Sequence[Op]) -> Any:
    """An intervention that applies ``ops`` (one op: its own class; several: a ``Compose``;
    none: ``NoOp``). ``from_ops(i.ops())`` applies exactly as ``i`` does.

    Example:
        >>> same = from_ops(Steer(v, layers=3, coeff=2.0).ops())  # doctest: +SKIP
    """
    items = [_one(op) for op in ops]
    if not items:
        return NoOp()
    return items[0] if len(items) == 1 else Compose(tuple(items))
