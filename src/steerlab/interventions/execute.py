"""The Hugging Face executor: hook ops (:mod:`.ops`) onto a stock model for as long as a context
is open.

Sites resolve through the model's :class:`~steerlab.models.adapter.ModelAdapter`: ``resid_pre[l]``
is the input of block ``l``, ``resid_post[l]`` its output, and a sublayer's write into the
residual is the output of ``adapter.attn_write`` / ``adapter.mlp_write`` (for sandwich-norm
models, the post-norm). Vectors are checked (width, finiteness) and placed on each hooked
module's device and dtype once, when the hook is registered.

Per-row ops (``{"kind": "rows"}``) are hooked once per distinct op, gated by a 0/1 row mask:
a row is changed exactly as the op alone would change it and every other row is left alone
(:mod:`.arithmetic`). Ops restricted to ``prompt`` or ``generated`` positions are gated by the
phase of the forward (a decode step is one new token after a filled KV cache).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..capture import resolve_layers
from ..errors import LayerError, VectorError
from ..hooks import HookSet, placed, scoped_hooks
from ..models.adapter import ModelAdapter, blocks_of, get_adapter
from ..models.compat import is_decode_step
from .arithmetic import clamp_delta, project_out, shift, span_coef
from .ops import HOOK_KINDS, Op, op_key
from .vectors import basis_of, checked, model_width, unit_of

__all__ = ["hooked", "op_basis", "op_deltas", "op_layers", "op_unit"]

_ACTIVE = {"all": (False, True), "prompt": (False,), "generated": (True,)}


def op_layers(op: Op, n_layers: int) -> list[int]:
    """The block indices an op touches."""
    return resolve_layers(op["layers"], n_layers)


def op_deltas(op: Op, n_layers: int, width: int) -> dict[int, torch.Tensor]:
    """layer -> ``coeff * vector`` (float32, CPU, checked) of an ``add`` op."""
    vec = op["vector"]
    out = {}
    for lay in op_layers(op, n_layers):
        if isinstance(vec, dict):
            if lay not in vec:
                raise LayerError(f"layer {lay} is not in this direction (has {sorted(vec)})")
            v = vec[lay]
        else:
            v = vec
        out[lay] = op["coeff"] * checked(v, width)
    return out


def op_basis(op: Op, width: int) -> torch.Tensor:
    """The removed direction of an ``ablate`` op: (D,) float64 unit, or (K, D) orthonormal."""
    basis = basis_of([checked(v, width) for v in op["vectors"]])
    return basis[0] if basis.shape[0] == 1 else basis  # one direction: the (D,) formula


def op_unit(op: Op, width: int) -> torch.Tensor:
    """The float64 unit direction of a ``clamp`` op."""
    return unit_of(checked(op["vector"], width))


class _Gate:
    """Whether a hook acts on this forward (phase), and on which rows (mask)."""

    def __init__(self, state: dict[str, bool], positions: str, rows: torch.Tensor | None) -> None:
        self.state, self.phases, self.rows = state, _ACTIVE[positions], rows

    def mask(self, h: torch.Tensor) -> torch.Tensor | bool | None:
        """False: leave ``h`` alone; None: every row; else a (B, 1, 1) 0/1 mask."""
        if self.state["decode"] not in self.phases:
            return False
        if self.rows is None:
            return None
        n = self.rows.shape[0]
        if h.shape[0] != n:
            # A batch of 1 under several rows is the shared-prefix forward of steerlab.prefix:
            # one prefix for every row cannot carry per-row treatments.
            hint = (
                " (per-row treatments cannot share a prefix cache: pass prefix=False / "
                "prefix_cache=False)"
                if h.shape[0] == 1
                else ""
            )
            raise VectorError(f"{n} row treatments for a batch of {h.shape[0]} rows{hint}")
        return self.rows.to(h.device, h.dtype)[:, None, None]


def _fn(gate: _Gate, apply: Callable[[torch.Tensor, Any], torch.Tensor]) -> Any:
    def fn(h: torch.Tensor) -> torch.Tensor | None:
        m = gate.mask(h)
        return None if m is False else apply(h, m)

    return fn


def _hook_op(
    hs: HookSet,
    model: nn.Module,
    ad: ModelAdapter,
    op: Op,
    gate: _Gate,
) -> None:
    blocks = blocks_of(model, ad)
    n, width = len(blocks), model_width(model)
    kind = op["kind"]
    if kind == "add":
        if op["site"] not in ("resid_pre", "resid_post"):
            raise ValueError(f"site must be 'resid_pre' or 'resid_post', not {op['site']!r}")
        for lay, delta in op_deltas(op, n, width).items():
            block = blocks[lay]
            d = placed(delta, block)
            add = _fn(gate, lambda h, m, d=d: shift(h, d, m))
            (hs.pre if op["site"] == "resid_pre" else hs.post)(block, add)
    elif kind == "ablate":
        r = op_basis(op, width)
        lays = list(range(n)) if op["layers"] == "all" else resolve_layers(op["layers"], n)
        for lay in lays:
            block = blocks[lay]
            mods = [(block, hs.pre)]
            if op["writes"]:
                mods += [
                    (block.get_submodule(ad.attn_write), hs.post),
                    (block.get_submodule(ad.mlp_write), hs.post),
                ]
            for mod, kind_of in mods:
                q = placed(r, mod)
                c = None if q.ndim == 1 else span_coef(q)
                kind_of(mod, _fn(gate, lambda h, m, q=q, c=c: project_out(h, q, m, c)))
    elif kind == "clamp":
        unit = op_unit(op, width)
        value = float(op["value"])
        for lay in op_layers(op, n):
            rp = placed(unit, blocks[lay])
            hs.pre(
                blocks[lay],
                _fn(gate, lambda h, m, rp=rp: shift(h, clamp_delta(h, rp, value), m)),
            )
    else:
        raise VectorError(f"the op {kind!r} is not applied by hooks")


def _entries(ops: Sequence[Op]) -> list[tuple[Op, torch.Tensor | None]]:
    """(op, row mask or None) for every hooked op; per-row ops grouped by content."""
    out: list[tuple[Op, torch.Tensor | None]] = []
    for op in ops:
        if op["kind"] != "rows":
            out.append((op, None))
            continue
        rows = op["rows"]
        if not rows:
            raise VectorError("no row treatments")
        groups: dict[Any, tuple[Op, list[int]]] = {}
        for i, row in enumerate(rows):
            for j, sub in enumerate(row):
                if sub["kind"] not in HOOK_KINDS:
                    raise VectorError(
                        f"a per-row treatment can only add, ablate or clamp; {sub['kind']!r} "
                        "changes the whole batch: apply it around the call"
                    )
                # the op's place in its row is part of the key: each row keeps its own order
                groups.setdefault((j, op_key(sub)), (sub, []))[1].append(i)
        # by place in the row: an op another row holds at its own place 1 must not run before
        # this row's op at place 0 (ops of one place touch disjoint or shared rows: they commute)
        for k in sorted(groups, key=lambda k: k[0]):
            sub, idx = groups[k]
            mask = torch.zeros(len(rows))
            mask[idx] = 1.0
            out.append((sub, mask))
    return out


@contextmanager
def hooked(
    model: nn.Module, ops: Sequence[Op], *, adapter: ModelAdapter | None = None
) -> Iterator[None]:
    """Apply the hook ops ``ops`` (``add``, ``ablate``, ``clamp``, ``rows``) while open.

    Example:
        >>> with hooked(model, Steer(v, layers=4, coeff=2.0).ops()):  # doctest: +SKIP
        ...     out = model.generate(**inputs)
    """
    ad = adapter or get_adapter(model)
    entries = _entries(ops)
    state = {"decode": False}
    with scoped_hooks() as hs:
        if any(op.get("positions", "all") != "all" for op, _ in entries):

            def phase(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                state["decode"] = is_decode_step(args, kwargs)

            hs.raw_pre(model, phase)
        for op, rows in entries:
            _hook_op(hs, model, ad, op, _Gate(state, op.get("positions", "all"), rows))
        yield
