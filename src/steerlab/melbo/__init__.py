"""MELBO: unsupervised discovery of steering vectors (Mack & Turner 2024).

Learn K vectors of norm R, added at ``resid_pre[S]``, that maximally change ``resid_pre[T]``;
each one is a candidate latent behaviour to look at. Random vectors of the same norm
(:func:`random_vectors`) are the control.

Example::

    from steerlab.melbo import MelboConfig, train_melbo
    res = train_melbo(lm, prompts, MelboConfig(radius=8.0, num_vectors=8))
    res.save("melbo.safetensors")
    with steerlab.steer(lm.model, res.to_direction(3)):
        ...
    # or the whole pipeline (``steerlab discover``): vectors, random control, report
    run_discover(lm, prompts, "runs/discover", DiscoverConfig(radius="auto"))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# the configs and the report types are light (the command line reads them); the rest needs torch
from .config import DiscoverConfig, MelboConfig
from .findings import Cluster, DiscoverReport, GroupSummary, Radius, VectorRow

if TYPE_CHECKING:
    from .discover import run_discover
    from .result import MelboResult, load_vectors, save_vectors, vector_direction
    from .sphere import random_vectors
    from .train import melbo_objective, train_melbo

__all__ = [
    "Cluster",
    "DiscoverConfig",
    "DiscoverReport",
    "GroupSummary",
    "MelboConfig",
    "MelboResult",
    "Radius",
    "VectorRow",
    "load_vectors",
    "melbo_objective",
    "random_vectors",
    "run_discover",
    "save_vectors",
    "train_melbo",
    "vector_direction",
]

_LAZY = {
    "run_discover": "discover",
    "MelboResult": "result",
    "load_vectors": "result",
    "save_vectors": "result",
    "vector_direction": "result",
    "random_vectors": "sphere",
    "melbo_objective": "train",
    "train_melbo": "train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'steerlab.melbo' has no attribute {name!r}")
