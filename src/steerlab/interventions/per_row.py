"""Per-row interventions: every row of one batch gets its own treatment.

A sweep evaluates many (layer, coefficient, vector, positions) settings on the same prompts.
Running each setting as its own batch repeats the whole model per setting; :class:`PerRow`
instead gives row ``i`` of a batch its own intervention (a :class:`~steerlab.interventions.
Steer`, :class:`~steerlab.interventions.Ablate`, :class:`~steerlab.interventions.Clamp`, a
``Compose`` of them, or :class:`~steerlab.interventions.NoOp`), so a grid of C settings x P
prompts runs as batches of C x P rows.

Each distinct op of the rows is hooked once, gated by a 0/1 row mask (:mod:`.execute`): a row
is changed exactly as its intervention alone would change it (bit for bit) and a row with
nothing to do at a site is left alone there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import VectorError
from ..models.load import LoadedModel
from .execute import hooked
from .ops import HOOK_KINDS, touches_prompt

__all__ = ["PerRow", "row_touches_prompt"]


def row_touches_prompt(iv: Any) -> bool:
    """Whether ``iv`` changes the prompt's own forward (not only generated tokens)."""
    return touches_prompt(iv.ops())


class PerRow:
    """Row ``i`` of every batch gets ``items[i]`` (an :class:`Intervention` that adds, ablates
    or clamps; :class:`NoOp` for an untreated row).

    The batch must have exactly ``len(items)`` rows whenever an op is active; a forward in
    which no op is active (e.g. a shared untreated prompt forward for rows that steer only
    ``generated`` tokens) is left alone whatever its size.

    Example:
        >>> rows = PerRow([Steer(v, layers=4, coeff=2.0), Ablate(u), NoOp()])  # doctest: +SKIP
        >>> with rows.applied(lm):  # a batch of 3 rows  # doctest: +SKIP
        ...     out = lm.model(**batch)
    """

    name = "per_row"

    def __init__(self, items: Sequence[Any]) -> None:
        if not items:
            raise VectorError("no row treatments")
        self.items = tuple(items)
        for i, it in enumerate(self.items):
            bad = [op["kind"] for op in it.ops() if op["kind"] not in HOOK_KINDS]
            if bad:
                raise VectorError(
                    f"row {i}: a per-row treatment can only add, ablate or clamp; {bad[0]!r} "
                    "changes the whole batch: apply it around the call"
                )

    def ops(self) -> list[dict[str, Any]]:
        return [{"kind": "rows", "rows": [it.ops() for it in self.items]}]

    def spec(self) -> dict[str, Any]:
        return {"kind": "per_row", "rows": [it.spec() for it in self.items]}

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        with hooked(lm.model, self.ops(), adapter=lm.adapter):
            yield lm
