"""Hooks installed inside vLLM's workers (imported there by name: keep it module-level).

They execute a treatment's ops (:mod:`steerlab.interventions.ops`) with the same arithmetic as
the Hugging Face hooks (:mod:`steerlab.interventions.arithmetic`), and find the modules through
the same :class:`~steerlab.models.adapter.ModelAdapter` row as the Hugging Face model (vLLM
keeps the checkpoint's module names, so the block list and each block's sublayer writes sit at
the same paths); no module name is written here.

vLLM's decoder layers are called as ``layer(positions, hidden_states, residual)`` and return
``(hidden_states, residual)``: the residual stream Hugging Face's block sees is their sum
(``residual`` is None before the first layer, where ``hidden_states`` is the embedding).
Tokens of every request are flattened into one (tokens, D) batch. So:

* adding ``d`` to the stream at a block's input adds it to ``hidden_states`` (the next fused
  add-and-norm sums both parts); at its output, to the returned ``hidden_states``;
* removing a direction removes it from both parts (the projection is linear), and from what
  the attention and MLP sublayers write (the adapter's ``attn_write`` / ``mlp_write``: output
  projections, or post-norms on sandwich-norm models);
* clamping reads the projection of the sum and corrects ``hidden_states``.

Layers that live on another pipeline stage are skipped: each stage hooks its own.

One call may carry several request groups, each under its own treatment: an op tagged with
``groups`` changes only the tokens of those groups' requests (:class:`Rows` reads which tokens
those are from the model runner at every step), by a 0/1 row mask, so a token of the group is
changed exactly as an untagged op would change it and every other token is left bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from ..hooks import module_device, placed
from ..interventions.arithmetic import clamp_delta, project_out, scaled, shift, span_coef
from ..interventions.execute import op_basis, op_deltas, op_layers, op_unit

HANDLES = "_steerlab_handles"


def _own_layers(model: nn.Module, blocks_path: str) -> tuple[dict[int, nn.Module], int]:
    """This stage's blocks by index, and the model's block count."""
    blocks = model.get_submodule(blocks_path)
    parent = blocks_path.rpartition(".")[0]
    inner = model.get_submodule(parent) if parent else model
    start = int(getattr(inner, "start_layer", 0))
    end = int(getattr(inner, "end_layer", len(blocks)))
    return {i: blocks[i] for i in range(start, end)}, len(blocks)


class Rows:
    """Which of the current step's flattened tokens belong to which request group.

    A grouped call tags every request with ``SamplingParams.extra_args["steerlab_group"]``;
    the model runner lays tokens out in ``input_batch.req_ids`` order with boundaries in
    ``query_start_loc``. A pre-hook on the stage's first layer marks every step stale; the
    first mask asked for then rebuilds the group of every token (padding tokens: no group,
    never steered).
    """

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.groups: torch.Tensor | None = None
        self.masks: dict[tuple[int, ...], torch.Tensor] = {}
        self.coeffs: dict[int, torch.Tensor] = {}

    def stale(self, *_a: Any, **_k: Any) -> None:
        self.groups = None
        self.masks = {}
        self.coeffs = {}

    def mask(self, groups: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
        """(T, 1) ones on the tokens of ``groups``, zeros elsewhere, in ``x``'s dtype."""
        m = self.masks.get(groups)
        if m is not None and m.shape[0] == x.shape[0] and m.dtype == x.dtype:
            return m
        if self.groups is None or self.groups.shape[0] != x.shape[0]:
            self.groups = self._token_groups(x.shape[0]).to(x.device)
        m = torch.isin(self.groups, torch.tensor(groups, device=x.device))
        m = m.to(x.dtype).unsqueeze(-1)
        self.masks[groups] = m
        return m

    def coeff(self, at: int, x: torch.Tensor) -> torch.Tensor:
        """(T, 1) float32: each token's request's coefficient at place ``at`` of its plan
        (``extra_args["steerlab_coeffs"]``; 0 where a request has none there, padding too)."""
        c = self.coeffs.get(at)
        if c is not None and c.shape[0] == x.shape[0]:
            return c
        out = torch.zeros(x.shape[0], dtype=torch.float32)
        for lo, hi, _rid, args in self._spans(x.shape[0]):
            cs = args.get("steerlab_coeffs") or ()
            if at < len(cs) and cs[at] is not None:
                out[lo:hi] = float(cs[at])
        c = out.unsqueeze(-1).to(x.device)
        self.coeffs[at] = c
        return c

    def _spans(self, n_tokens: int) -> list[tuple[int, int, str, dict[str, Any]]]:
        """(first token, end, request id, ``extra_args``) of each scheduled request."""
        r = self.runner
        batch = r.input_batch
        n = int(batch.num_reqs)
        qsl = r.query_start_loc.np[: n + 1]
        if int(qsl[n]) > n_tokens:
            raise RuntimeError(f"{int(qsl[n])} scheduled tokens in a batch of {n_tokens}")
        out = []
        for i, rid in enumerate(batch.req_ids[:n]):
            sp = r.requests[rid].sampling_params
            args = (sp.extra_args or {}) if sp is not None else {}
            out.append((int(qsl[i]), int(qsl[i + 1]), rid, args))
        return out

    def _token_groups(self, n_tokens: int) -> torch.Tensor:
        out = torch.full((n_tokens,), -1, dtype=torch.long)
        for lo, hi, rid, args in self._spans(n_tokens):
            g = args.get("steerlab_group")
            if g is None:  # never leave a request of a grouped call unsteered by accident
                raise RuntimeError(f"request {rid} carries no steerlab group")
            out[lo:hi] = int(g)
        return out


# A selector: None (every token) or (Rows, groups) (the tokens of those groups only).
Sel = tuple[Rows, tuple[int, ...]] | None


def _m(sel: Sel, x: torch.Tensor) -> torch.Tensor | None:
    return None if sel is None else sel[0].mask(sel[1], x)


def _split(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
    names = ("positions", "hidden_states", "residual")
    vals = list(args) + [kwargs.get(n) for n in names[len(args) :]]
    return vals[0], vals[1], vals[2] if len(vals) > 2 else None


def _join(args: tuple[Any, ...], kwargs: dict[str, Any], hs: Any, res: Any) -> Any:
    a = list(args)
    k = dict(kwargs)
    if len(a) > 1:
        a[1] = hs
    else:
        k["hidden_states"] = hs
    if len(a) > 2:
        a[2] = res
    elif "residual" in k or res is not None:
        k["residual"] = res
    return tuple(a), k


# the stream -> the delta to add to it: a steer's constant, or its per-request rows
Delta = Callable[[torch.Tensor], torch.Tensor]


def _const(d: torch.Tensor, _x: torch.Tensor) -> torch.Tensor:
    return d


def _row_delta(v: torch.Tensor, at: int, sel: Sel, x: torch.Tensor) -> torch.Tensor:
    if sel is None:
        raise RuntimeError("a per-request coefficient needs request groups")
    return scaled(sel[0].coeff(at, x), v)


def _pre_add(delta: Delta, sel: Sel, _m_: nn.Module, args: tuple, kwargs: dict) -> Any:
    _, hs, res = _split(args, kwargs)
    return _join(args, kwargs, shift(hs, delta(hs), _m(sel, hs)), res)


def _post_add(delta: Delta, sel: Sel, _m_: nn.Module, _a: tuple, _k: dict, out: Any) -> Any:
    hs, res = out
    return shift(hs, delta(hs), _m(sel, hs)), res


def _remove(x: torch.Tensor | None, q: Any, sel: Sel) -> torch.Tensor | None:
    return None if x is None else project_out(x, q[0], _m(sel, x), q[1])


def _pre_remove(q: Any, sel: Sel, _m_: nn.Module, args: tuple, kwargs: dict) -> Any:
    _, hs, res = _split(args, kwargs)
    return _join(args, kwargs, _remove(hs, q, sel), _remove(res, q, sel))


def _out_remove(q: Any, sel: Sel, _m_: nn.Module, _args: tuple, out: Any) -> Any:
    if isinstance(out, tuple):  # vLLM's parallel linear layers return (output, bias)
        return (_remove(out[0], q, sel), *out[1:])
    return _remove(out, q, sel)


def _pre_clamp(
    u: torch.Tensor, value: float, sel: Sel, _m_: nn.Module, args: tuple, kwargs: dict
) -> Any:
    _, hs, res = _split(args, kwargs)
    x = hs if res is None else hs + res
    return _join(args, kwargs, shift(hs, clamp_delta(x, u, value), _m(sel, hs)), res)


def _placed_basis(op: dict[str, Any], width: int, mod: nn.Module) -> tuple[Any, Any]:
    q = placed(op_basis(op, width), mod)
    return q, (None if q.ndim == 1 else span_coef(q))


def install(
    model: nn.Module,
    plan: list[dict[str, Any]],
    runner: Any = None,
    *,
    adapter: dict[str, Any],
    width: int,
) -> int:
    """Install the hooks of ``plan`` (see :mod:`steerlab.engines.vllm`); returns how many.

    ``adapter``: the Hugging Face model's :class:`~steerlab.models.adapter.ModelAdapter` as a
    dict (the same module paths hold in vLLM's model); ``width``: the residual's width.
    An op with ``"groups"`` applies to the tokens of those request groups only (``runner``,
    the worker's model runner, says which tokens those are); without, to every token.
    """
    remove(model)
    layers, n = _own_layers(model, adapter["blocks"])
    handles: list[Any] = []
    rows: Rows | None = None
    if any(op.get("groups") is not None for op in plan):
        if runner is None:
            raise ValueError("grouped ops need the worker's model runner")
        rows = Rows(runner)
        # a new step starts at this stage's first layer: the decoder module itself is called
        # past nn.Module's hooks (vLLM's compile decorator replaces its __call__), so a hook
        # there never fires and a stale layout would steer the wrong tokens
        handles.append(layers[min(layers)].register_forward_pre_hook(rows.stale))

    def pre(block: nn.Module, fn: Any) -> None:
        handles.append(block.register_forward_pre_hook(fn, with_kwargs=True))

    try:
        for op in plan:
            g = op.get("groups")
            sel: Sel = None if g is None else (rows, tuple(int(x) for x in g))
            _install_op(op, sel, layers, n, width, adapter, pre, handles)
    except BaseException:
        for h in handles:
            h.remove()
        raise
    setattr(model, HANDLES, handles)
    return len(handles)


def _install_op(
    op: dict[str, Any],
    sel: Sel,
    layers: dict[int, nn.Module],
    n: int,
    width: int,
    adapter: dict[str, Any],
    pre: Any,
    handles: list[Any],
) -> None:
    kind = op["kind"]
    if kind == "add":
        per_request = op["coeff"] is None  # each request's own (plans.split_coeffs)
        for lay, d in op_deltas({**op, "coeff": 1.0} if per_request else op, n, width).items():
            if lay not in layers:
                continue
            block = layers[lay]
            if per_request:  # float32: the product is cast to the stream's dtype as a delta is
                at = int(op["coeff_at"])
                delta = partial(_row_delta, d.detach().to(module_device(block)), at, sel)
            else:
                delta = partial(_const, placed(d, block))
            if op["site"] == "resid_pre":
                pre(block, partial(_pre_add, delta, sel))
            else:
                fn = partial(_post_add, delta, sel)
                handles.append(block.register_forward_hook(fn, with_kwargs=True))
    elif kind == "ablate":
        lays = range(n) if op["layers"] == "all" else op_layers(op, n)
        for lay in lays:
            if lay not in layers:
                continue
            block = layers[lay]
            pre(block, partial(_pre_remove, _placed_basis(op, width, block), sel))
            if op["writes"]:
                for path in (adapter["attn_write"], adapter["mlp_write"]):
                    sub = block.get_submodule(path)
                    fn = partial(_out_remove, _placed_basis(op, width, sub), sel)
                    handles.append(sub.register_forward_hook(fn))
    elif kind == "clamp":
        unit = op_unit(op, width)
        for lay in op_layers(op, n):
            if lay in layers:
                u = placed(unit, layers[lay])
                pre(layers[lay], partial(_pre_clamp, u, float(op["value"]), sel))
    else:
        raise ValueError(f"no vLLM hook for {kind!r}")


def install_on_worker(
    worker: Any, plan: list[dict[str, Any]], adapter: dict[str, Any], width: int
) -> int:
    """:func:`install` through ``collective_rpc``: the worker gives its model and runner."""
    runner = worker.model_runner
    return install(runner.get_model(), plan, runner, adapter=adapter, width=width)


def hooks_on_worker(worker: Any) -> int:
    """:func:`count_hooks` through ``collective_rpc``."""
    return count_hooks(worker.model_runner.get_model())


def grouping_supported(worker: Any) -> bool:
    """Whether this worker's model runner has the layout :class:`Rows` reads."""
    r = getattr(worker, "model_runner", None)
    batch = getattr(r, "input_batch", None)
    qsl = getattr(r, "query_start_loc", None)
    return (
        batch is not None
        and hasattr(batch, "req_ids")
        and hasattr(batch, "num_reqs")
        and hasattr(qsl, "np")
        and isinstance(getattr(r, "requests", None), dict)
        and callable(getattr(r, "get_model", None))
    )


def remove(model: nn.Module) -> int:
    """Remove every hook :func:`install` put on ``model``; returns how many."""
    handles = getattr(model, HANDLES, [])
    for h in handles:
        h.remove()
    if hasattr(model, HANDLES):
        delattr(model, HANDLES)
    return len(handles)


def count_hooks(model: nn.Module) -> int:
    """Forward hooks and pre-hooks on the model's modules (tests: none are left behind)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
