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

from .config import MelboConfig
from .discover import DiscoverConfig, run_discover
from .result import MelboResult, load_vectors, save_vectors, vector_direction
from .sphere import random_vectors
from .train import melbo_objective, train_melbo

__all__ = [
    "DiscoverConfig",
    "MelboConfig",
    "MelboResult",
    "load_vectors",
    "melbo_objective",
    "random_vectors",
    "run_discover",
    "save_vectors",
    "train_melbo",
    "vector_direction",
]
