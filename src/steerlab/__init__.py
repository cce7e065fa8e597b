"""steerlab: find directions in a model's residual stream, read, steer and erase with them.

Quick start::

    import steerlab
    lm = steerlab.load_model("smollm2-135m")
    d = steerlab.extract(lm, happy_prompts, sad_prompts, layers="8:20")
    with steerlab.steer(lm.model, d, layers=12, coeff=4):
        print(steerlab.generate(lm.model, lm.tokenizer, ["Tell me about your day."]))
    with steerlab.ablate(lm.model, d, layer=12):
        ...
    edited = steerlab.orthogonalize(lm.model, d, layer=12)

Imports are light: submodules that need torch or transformers load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "Direction",
    "LoadedModel",
    "ModelAdapter",
    "SteerlabError",
    "__version__",
    "ablate",
    "clamp",
    "extract",
    "generate",
    "get_adapter",
    "load_model",
    "orthogonalize",
    "read_prompts",
    "steer",
]

_LAZY = {
    "Direction": "steerlab.directions",
    "extract": "steerlab.directions",
    "LoadedModel": "steerlab.models",
    "ModelAdapter": "steerlab.models",
    "get_adapter": "steerlab.models",
    "load_model": "steerlab.models",
    "SteerlabError": "steerlab.errors",
    "ablate": "steerlab.interventions",
    "clamp": "steerlab.interventions",
    "orthogonalize": "steerlab.interventions",
    "steer": "steerlab.interventions",
    "generate": "steerlab.generation",
    "read_prompts": "steerlab.io.prompts",
}

if TYPE_CHECKING:
    from .directions import Direction, extract
    from .errors import SteerlabError
    from .generation import generate
    from .interventions import ablate, clamp, orthogonalize, steer
    from .io.prompts import read_prompts
    from .models import LoadedModel, ModelAdapter, get_adapter, load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'steerlab' has no attribute {name!r}")
