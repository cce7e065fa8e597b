"""Scoped, exception-safe hooks on stock Hugging Face modules.

Every handle is kept the moment it is registered and removed in ``finally``; hooks registered
by anyone else are never touched. Decoder blocks return a tensor or a tuple depending on the
transformers version and architecture: :func:`untuple` / :func:`retuple` hide the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "HookSet",
    "StopForward",
    "module_device",
    "module_dtype",
    "placed",
    "retuple",
    "scoped_hooks",
    "untuple",
]

# fn(hidden_states) -> replacement or None (leave unchanged). Shape (B, T, D).
HiddenFn = Callable[[torch.Tensor], torch.Tensor | None]


class StopForward(Exception):
    """Raised by a hook to end a forward pass early (nothing after it is computed)."""


def untuple(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def retuple(orig: Any, new: torch.Tensor) -> Any:
    return (new, *orig[1:]) if isinstance(orig, tuple) else new


def module_device(module: nn.Module) -> torch.device:
    """Where a module computes: its accelerate execution device when it has one (offloaded
    weights live elsewhere), else the device of its first parameter or buffer. With
    ``device_map`` every block may sit on its own device."""
    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(dev) if not isinstance(dev, torch.device) else dev
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def module_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of a module's first floating-point parameter (float32 when it has none)."""
    for t in module.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def placed(vector: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``vector`` on the device and in the dtype of ``module``, moved once at registration
    rather than on every call (a cross-device copy per forward would dominate decoding)."""
    return vector.detach().to(device=module_device(module), dtype=module_dtype(module))


class HookSet:
    """Handles registered within one scope."""

    def __init__(self) -> None:
        self.handles: list[RemovableHandle] = []

    def pre(self, module: nn.Module, fn: HiddenFn) -> None:
        """Call ``fn`` on the module's first input (positional or ``hidden_states=``)."""

        def hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            if "hidden_states" in kwargs:
                new = fn(kwargs["hidden_states"])
                return None if new is None else (args, {**kwargs, "hidden_states": new})
            return None

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def post(self, module: nn.Module, fn: HiddenFn) -> None:
        """Call ``fn`` on the module's output (first element when it is a tuple)."""

        def hook(_mod: nn.Module, _args: Any, out: Any) -> Any:
            new = fn(untuple(out))
            return None if new is None else retuple(out, new)

        self.handles.append(module.register_forward_hook(hook))

    def raw_pre(self, module: nn.Module, fn: Callable[..., Any]) -> None:
        """Register a plain ``with_kwargs`` forward pre-hook."""
        self.handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))

    def remove_all(self) -> None:
        while self.handles:
            self.handles.pop().remove()


@contextmanager
def scoped_hooks() -> Iterator[HookSet]:
    """Yield a :class:`HookSet`; all its hooks are removed on exit, normal or not."""
    hs = HookSet()
    try:
        yield hs
    finally:
        hs.remove_all()
