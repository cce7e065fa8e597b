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

__all__ = ["HookSet", "StopForward", "retuple", "scoped_hooks", "untuple"]

# fn(hidden_states) -> replacement or None (leave unchanged). Shape (B, T, D).
HiddenFn = Callable[[torch.Tensor], torch.Tensor | None]


class StopForward(Exception):
    """Raised by a hook to end a forward pass early (nothing after it is computed)."""


def untuple(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def retuple(orig: Any, new: torch.Tensor) -> Any:
    return (new, *orig[1:]) if isinstance(orig, tuple) else new


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
