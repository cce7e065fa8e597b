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

    # Treatments as values, applied to the loaded model and undone on exit:
    with steerlab.apply(lm, [steerlab.Steer(d, layers=12, coeff=4),
                             steerlab.PromptPrefix(system="Be brief.")]) as treated:
        steerlab.generate(treated.model, treated.tokenizer, ["Tell me about your day."])

Imports are light: submodules that need torch or transformers load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "Ablate",
    "Behavior",
    "BehaviorRate",
    "Clamp",
    "CompareConfig",
    "CompareReport",
    "Compose",
    "Contrast",
    "Direction",
    "DiscoverReport",
    "Engine",
    "Intervention",
    "LoRA",
    "LoadedModel",
    "ModelAdapter",
    "NoOp",
    "OrganismRecord",
    "Orthogonalize",
    "PerRow",
    "ProbeConfig",
    "PromptPrefix",
    "RefusalReport",
    "Run",
    "Steer",
    "SteerRows",
    "SteerlabError",
    "SummaryRow",
    "SweepConfig",
    "SweepReport",
    "SweepVerdict",
    "VariantMetrics",
    "Verdict",
    "Winner",
    "__version__",
    "ablate",
    "apply",
    "clamp",
    "extract",
    "from_ops",
    "generate",
    "get_adapter",
    "load_behavior",
    "load_model",
    "make_engine",
    "make_probe_data",
    "make_scorer",
    "orthogonalize",
    "read_prompts",
    "run_compare",
    "run_probe",
    "run_sweep",
    "steer",
    "steer_many",
]

_LAZY = {
    "Direction": "steerlab.directions",
    "extract": "steerlab.directions",
    "LoadedModel": "steerlab.models",
    "ModelAdapter": "steerlab.models",
    "get_adapter": "steerlab.models",
    "load_model": "steerlab.models",
    "SteerlabError": "steerlab.errors",
    "Ablate": "steerlab.interventions",
    "Clamp": "steerlab.interventions",
    "Compose": "steerlab.interventions",
    "Intervention": "steerlab.interventions",
    "LoRA": "steerlab.interventions",
    "NoOp": "steerlab.interventions",
    "Orthogonalize": "steerlab.interventions",
    "PromptPrefix": "steerlab.interventions",
    "Steer": "steerlab.interventions",
    "SteerRows": "steerlab.interventions",
    "apply": "steerlab.interventions",
    "Run": "steerlab.runs",
    "ablate": "steerlab.interventions",
    "clamp": "steerlab.interventions",
    "orthogonalize": "steerlab.interventions",
    "steer": "steerlab.interventions",
    "steer_many": "steerlab.interventions",
    "generate": "steerlab.generation",
    "read_prompts": "steerlab.io.prompts",
    "Behavior": "steerlab.behaviors",
    "load_behavior": "steerlab.behaviors",
    "make_scorer": "steerlab.behaviors",
    "PerRow": "steerlab.interventions",
    "Engine": "steerlab.engines",
    "make_engine": "steerlab.engines",
    "from_ops": "steerlab.interventions",
    "SweepConfig": "steerlab.sweep",
    "run_sweep": "steerlab.sweep",
    "ProbeConfig": "steerlab.probe",
    "make_probe_data": "steerlab.probe",
    "run_probe": "steerlab.probe",
    "CompareConfig": "steerlab.compare",
    "run_compare": "steerlab.compare",
    # what the pipelines return (their to_dict() is the JSON they write)
    "RefusalReport": "steerlab.refusal.result",
    "VariantMetrics": "steerlab.refusal.result",
    "Verdict": "steerlab.refusal.result",
    "DiscoverReport": "steerlab.melbo.findings",
    "OrganismRecord": "steerlab.organism.result",
    "BehaviorRate": "steerlab.organism.result",
    "CompareReport": "steerlab.compare.result",
    "Contrast": "steerlab.compare.result",
    "SummaryRow": "steerlab.compare.result",
    "Winner": "steerlab.compare.result",
    "SweepReport": "steerlab.sweep.result",
    "SweepVerdict": "steerlab.sweep.result",
}

if TYPE_CHECKING:
    from .behaviors import Behavior, load_behavior, make_scorer
    from .compare import CompareConfig, run_compare
    from .compare.result import CompareReport, Contrast, SummaryRow, Winner
    from .directions import Direction, extract
    from .engines import Engine, make_engine
    from .errors import SteerlabError
    from .generation import generate
    from .interventions import (
        Ablate,
        Clamp,
        Compose,
        Intervention,
        LoRA,
        NoOp,
        Orthogonalize,
        PerRow,
        PromptPrefix,
        Steer,
        SteerRows,
        ablate,
        apply,
        clamp,
        from_ops,
        orthogonalize,
        steer,
        steer_many,
    )
    from .io.prompts import read_prompts
    from .melbo.findings import DiscoverReport
    from .models import LoadedModel, ModelAdapter, get_adapter, load_model
    from .organism.result import BehaviorRate, OrganismRecord
    from .probe import ProbeConfig, make_probe_data, run_probe
    from .refusal.result import RefusalReport, VariantMetrics, Verdict
    from .runs import Run
    from .sweep import SweepConfig, run_sweep
    from .sweep.result import SweepReport, SweepVerdict


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'steerlab' has no attribute {name!r}")
