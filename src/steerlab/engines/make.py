"""Making an engine by name."""

from __future__ import annotations

from typing import Any

from ..models.load import LoadedModel
from .base import ENGINES, Engine
from .hf import HFEngine

__all__ = ["make_engine"]


def make_engine(lm: LoadedModel, name: str = "hf", **options: Any) -> Engine:
    """An engine for ``lm``: ``hf`` decodes on ``lm`` itself, ``vllm`` starts stock vLLM on the
    same weights. Close it with ``engine.close()`` when done.

    Options for ``vllm``: ``tensor_parallel_size``, ``pipeline_parallel_size``,
    ``max_model_len``, ``dtype``, ``gpu_memory_utilization``, ``distributed_executor_backend``.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    if name == "hf":
        return HFEngine()
    from .vllm import VLLMEngine

    return VLLMEngine(lm, **options)
