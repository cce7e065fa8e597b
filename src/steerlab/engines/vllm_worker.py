"""Hooks installed inside vLLM's workers (imported there by name: keep it module-level).

vLLM's decoder layers (llama, qwen2 and their relatives) are called as
``layer(positions, hidden_states, residual)`` and return ``(hidden_states, residual)``: the
residual stream Hugging Face's block sees is their sum (``residual`` is None before the first
layer, where ``hidden_states`` is the embedding). Tokens of every request are flattened into
one (tokens, D) batch. So:

* adding ``d`` to the stream at a block's input adds it to ``hidden_states`` (the next fused
  add-and-norm sums both parts); at its output, to the returned ``hidden_states``;
* removing a direction removes it from both parts (the projection is linear), and from what
  the attention and MLP sublayers write (``o_proj`` and ``down_proj`` outputs);
* clamping reads the projection of the sum and corrects ``hidden_states``.

Layers that live on another pipeline stage are skipped: each stage hooks its own.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

HANDLES = "_steerlab_handles"


def _inner(model: nn.Module) -> nn.Module:
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers"):
        raise RuntimeError(f"{type(model).__name__} has no .model.layers: not a supported layout")
    return inner


def _own_layers(model: nn.Module) -> dict[int, nn.Module]:
    inner = _inner(model)
    start = int(getattr(inner, "start_layer", 0))
    end = int(getattr(inner, "end_layer", len(inner.layers)))
    return {i: inner.layers[i] for i in range(start, end)}


def _remove_dir(x: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor | None:
    if x is None:
        return None
    uu = u.to(x.dtype)
    return x - (x @ uu).unsqueeze(-1) * uu


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


def _pre_add(d: torch.Tensor, _m: nn.Module, args: tuple, kwargs: dict) -> Any:
    _, hs, res = _split(args, kwargs)
    return _join(args, kwargs, hs + d.to(hs.dtype), res)


def _post_add(d: torch.Tensor, _m: nn.Module, _args: tuple, _kw: dict, out: Any) -> Any:
    hs, res = out
    return hs + d.to(hs.dtype), res


def _pre_remove(u: torch.Tensor, _m: nn.Module, args: tuple, kwargs: dict) -> Any:
    _, hs, res = _split(args, kwargs)
    return _join(args, kwargs, _remove_dir(hs, u), _remove_dir(res, u))


def _pre_clamp(u: torch.Tensor, value: float, _m: nn.Module, args: tuple, kwargs: dict) -> Any:
    _, hs, res = _split(args, kwargs)
    x = hs if res is None else hs + res
    uu = u.to(hs.dtype)
    return _join(args, kwargs, hs + (value - x @ uu).unsqueeze(-1) * uu, res)


def _out_remove(u: torch.Tensor, _m: nn.Module, _args: tuple, out: Any) -> Any:
    if isinstance(out, tuple):  # vLLM's parallel linear layers return (output, bias)
        return (_remove_dir(out[0], u), *out[1:])
    return _remove_dir(out, u)


def install(model: nn.Module, plan: list[dict[str, Any]]) -> int:
    """Install the hooks of ``plan`` (see :mod:`steerlab.engines.vllm`); returns how many."""
    remove(model)
    p = next(model.parameters())
    layers = _own_layers(model)
    handles: list[Any] = []

    def vec(t: Any) -> torch.Tensor:
        return torch.as_tensor(t, dtype=torch.float32).to(p.device)

    for op in plan:
        kind = op["kind"]
        if kind == "add":
            for lay, d in op["deltas"].items():
                if int(lay) not in layers:
                    continue
                block = layers[int(lay)]
                if op["site"] == "resid_pre":
                    h = block.register_forward_pre_hook(partial(_pre_add, vec(d)), with_kwargs=True)
                else:
                    h = block.register_forward_hook(partial(_post_add, vec(d)), with_kwargs=True)
                handles.append(h)
        elif kind == "project":  # a block input only (per-row ablation settings)
            for lay, u in op["units"].items():
                if int(lay) in layers:
                    fn = partial(_pre_remove, vec(u))
                    handles.append(layers[int(lay)].register_forward_pre_hook(fn, with_kwargs=True))
        elif kind == "ablate":
            u = vec(op["unit"])
            for block in layers.values():
                handles.append(
                    block.register_forward_pre_hook(partial(_pre_remove, u), with_kwargs=True)
                )
                for sub in (block.self_attn.o_proj, block.mlp.down_proj):
                    handles.append(sub.register_forward_hook(partial(_out_remove, u)))
        elif kind == "clamp":
            u = vec(op["unit"])
            for lay in op["layers"]:
                if int(lay) in layers:
                    fn = partial(_pre_clamp, u, float(op["value"]))
                    handles.append(layers[int(lay)].register_forward_pre_hook(fn, with_kwargs=True))
        else:
            for h in handles:
                h.remove()
            raise ValueError(f"no vLLM hook for {kind!r}")
    setattr(model, HANDLES, handles)
    return len(handles)


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
