"""What changes between the transformers releases steerlab supports (see ``pyproject.toml``).

transformers 5.24 renamed the KV-cache argument of ``forward``/``generate`` from
``past_key_values`` to ``cache`` (the old name is deprecated, to be removed in 5.40) and stopped
passing ``cache_position``. Code that names the argument goes through :func:`cache_kwarg`;
code that reads it back from a forward's arguments or outputs goes through :func:`cache_in` and
:func:`cache_of`.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

from torch import nn

__all__ = ["cache_in", "cache_kwarg", "cache_of", "is_decode_step"]

_NAMES = ("cache", "past_key_values")


@lru_cache(maxsize=64)
def _kwarg_for(forward_type: type) -> str:
    params = inspect.signature(forward_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(model: nn.Module) -> str:
    """The name this model's ``forward`` takes its KV cache under."""
    return _kwarg_for(type(model))


def cache_in(kwargs: dict[str, Any]) -> Any:
    """The KV cache passed to a forward, under either name (None when there is none)."""
    for name in _NAMES:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


def cache_of(output: Any) -> Any:
    """The KV cache a forward returned."""
    for name in _NAMES:
        value = getattr(output, name, None)
        if value is not None:
            return value
    return None


def _seen_tokens(cache: Any) -> int:
    try:
        return int(cache.get_seq_length())
    except (AttributeError, TypeError):
        return 0


def is_decode_step(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a causal LM's forward is a decode step (one new token after a filled cache).

    Decided from the input length and the cache position, never from a kwarg's name: a prompt
    forward has several tokens, or one token at position 0; a decode step has one token after
    a non-empty cache. A prompt's remainder run on a cached prefix (several tokens) is a prompt.
    """
    x = kwargs.get("input_ids")
    if x is None:
        x = args[0] if args else kwargs.get("inputs_embeds")
    if x is None or x.ndim < 2 or x.shape[1] != 1:
        return False
    pos = kwargs.get("cache_position")
    if pos is not None:
        return int(pos.reshape(-1)[0]) > 0
    cache = cache_in(kwargs)
    return cache is not None and _seen_tokens(cache) > 0
