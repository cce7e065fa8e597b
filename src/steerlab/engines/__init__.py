"""Generation engines: the Hugging Face model itself (``hf``, always there) or stock vLLM
(``vllm``, the ``steerlab[vllm]`` extra), behind one :class:`Engine` protocol.

An engine is made with :func:`make_engine` and passed explicitly to what decodes
(``run_refusal(..., engine=e)``, ``Measurer(..., engine=e)``, ``e.generate_rows(...)``); the
treatments to repeat travel with each call as interventions (their ``ops()``). Teacher-forced
scoring (log-probabilities, capture) stays on the Hugging Face model.
"""

from __future__ import annotations

from typing import Any

from ..models.load import LoadedModel
from .base import ENGINES, Engine, Generated
from .hf import HFEngine

__all__ = ["ENGINES", "Engine", "Generated", "HFEngine", "make_engine"]


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
