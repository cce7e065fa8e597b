"""Generation engines: the Hugging Face model itself (``hf``, always there) or stock vLLM
(``vllm``, the ``steerlab[vllm]`` extra), behind one :class:`Engine` protocol.

An engine is made with :func:`make_engine` and passed explicitly to what decodes
(``run_refusal(..., engine=e)``, ``Measurer(..., engine=e)``, ``e.generate_rows(...)``); the
treatments to repeat travel with each call as interventions (their ``ops()``). Teacher-forced
scoring (log-probabilities, capture) stays on the Hugging Face model.
"""

from __future__ import annotations

from .base import ENGINES, Engine, Generated
from .hf import HFEngine
from .make import make_engine

__all__ = ["ENGINES", "Engine", "Generated", "HFEngine", "make_engine"]
