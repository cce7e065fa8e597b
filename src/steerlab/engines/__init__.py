"""Generation engines: the Hugging Face model itself (``hf``, always there) or stock vLLM
(``vllm``, the ``steerlab[vllm]`` extra).

An engine is *bound* to a loaded model with :func:`use_engine`; from then on
:func:`steerlab.generation.generate` and :func:`steerlab.evaluate.engine.greedy_rows` send their
decoding to it, repeating whatever treatments are applied to the model at that moment (see
:mod:`steerlab.interventions.record`). Teacher-forced scoring (log-probabilities, capture)
stays on the Hugging Face model, which keeps the same treatments applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from weakref import WeakKeyDictionary

from torch import nn

from ..models.load import LoadedModel

__all__ = ["ENGINES", "bound_engine", "engine_off", "release_engine", "use_engine"]

ENGINES = ("hf", "vllm")
_BOUND: WeakKeyDictionary[nn.Module, Any] = WeakKeyDictionary()


def use_engine(lm: LoadedModel, name: str = "hf", **options: Any) -> Any:
    """Bind engine ``name`` to ``lm`` (``hf``: unbind); returns the engine (None for hf).

    Options for ``vllm``: ``tensor_parallel_size``, ``pipeline_parallel_size``,
    ``max_model_len``, ``dtype``, ``gpu_memory_utilization``, ``distributed_executor_backend``.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    release_engine(lm)
    if name == "hf":
        return None
    from .vllm import VLLMEngine

    eng = VLLMEngine(lm, **options)
    _BOUND[lm.model] = eng
    return eng


def bound_engine(model: nn.Module) -> Any:
    """The engine bound to ``model``, or None (the Hugging Face model generates)."""
    return _BOUND.get(model)


def release_engine(lm: LoadedModel) -> None:
    """Unbind (and shut down) the engine bound to ``lm``, if any."""
    eng = _BOUND.pop(lm.model, None)
    if eng is not None:
        eng.close()


@contextmanager
def engine_off(lm: LoadedModel) -> Iterator[LoadedModel]:
    """Decode on the Hugging Face model inside the context, whatever engine is bound."""
    eng = _BOUND.pop(lm.model, None)
    try:
        yield lm
    finally:
        if eng is not None:
            _BOUND[lm.model] = eng
