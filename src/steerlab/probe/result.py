"""What ``steerlab probe`` computes, as frozen dataclasses; ``to_dict()`` is ``probe.json``.

The pipeline fills these; the report page and the command line only format what they hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .fit import Scored
from .nulls import NullSummary

__all__ = ["EfficiencyPoint", "LayerResult", "ProbeResult", "Projection"]

BEST_RULE = "highest accuracy on a validation part of train"
ERASURE_FIT = (
    "eraser and a fresh logistic probe both fitted on train, scored on erased test (at chance "
    "by construction: equal class means make zero weights optimal)"
)
HELD_OUT_FIT = (
    "eraser fitted on one half of train; a fresh logistic probe fitted on the other half, "
    "erased, and scored on erased test"
)
CONTROLS_FIT = {
    "shuffled": "logistic regression on permuted train labels, each permutation refitting its "
    "own C by cross-validation on train only; scored on the real test labels",
    "random": "uniformly random unit directions (norm-matched), each signed on train so the "
    "positive class projects higher; classified at the midpoint of the train-class means",
    "percentile": "each method's test accuracy at that layer within the null's draws (share "
    "below, ties half); p_value = (1 + draws >= it) / (1 + draws)",
}


@dataclass(frozen=True)
class LayerResult:
    """Everything measured at one layer. ``dirs`` (unit directions) are not written to JSON;
    they go to the safetensors files."""

    layer: int
    c: float  # logistic C, cross-validated on all of train
    c_val: float  # logistic C for the validation fit, cross-validated on its fitting part only
    dirs: Mapping[str, np.ndarray]
    methods: Mapping[str, Scored]
    val: Mapping[str, float]  # validation accuracy per method, for choosing the layer
    shuffled: NullSummary
    random: NullSummary
    after_leace: Scored
    after_mean_diff_ablation: Scored
    held_out_before: Scored
    held_out_leace: Scored
    held_out_mean_diff: Scored
    cosine: list[list[float]]
    transfer: Mapping[str, Scored] | None = None


@dataclass(frozen=True)
class EfficiencyPoint:
    """Test accuracy of one method with ``n_per_class`` training examples, over draws."""

    n_per_class: int
    accuracy: float
    interval: tuple[float, float]  # the middle 95% of the draws
    draws: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_per_class": self.n_per_class,
            "accuracy": self.accuracy,
            "interval": list(self.interval),
            "draws": self.draws,
        }


@dataclass(frozen=True)
class Projection:
    """One method's test projections at its best layer: the per-prompt scores, in the order of
    the test sets, the threshold, each class's mean and the share on its side."""

    layer: int
    pos: tuple[float, ...]
    neg: tuple[float, ...]
    threshold: float
    pos_mean: float | None
    neg_mean: float | None
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "pos": list(self.pos),
            "neg": list(self.neg),
            "threshold": self.threshold,
            "pos_mean": self.pos_mean,
            "neg_mean": self.neg_mean,
            "accuracy": self.accuracy,
        }


def _rows(rows: tuple[LayerResult, ...], key: str) -> list[dict[str, Any]]:
    return [getattr(r, key).to_dict() for r in rows]


@dataclass(frozen=True)
class ProbeResult:
    """A whole probe run. ``to_dict()`` is the ``probe.json`` contract: ``methods``,
    ``controls.{shuffled,random}`` (per-layer lists; each row the mean over draws with its
    spread), ``controls.n_permutations``, ``controls.n_random_directions``, ``erasure``,
    ``agreement``, ``validation_accuracy``, ``best``, ``logistic_c``, ``sample_efficiency``,
    ``projections``, and when run ``transfer``, ``read_vs_steer``, ``timings``."""

    steerlab_version: str
    model: Mapping[str, Any]
    data: Mapping[str, Any]
    config: Mapping[str, Any]
    layers: tuple[int, ...]
    methods: tuple[str, ...]
    rows: tuple[LayerResult, ...]
    best: Mapping[str, int]
    sample_efficiency: Mapping[str, tuple[EfficiencyPoint, ...]]
    projections: Mapping[str, Projection]
    n_permutations: int
    n_random_directions: int
    reference: str
    mean_cosine_to_reference: float | None
    read_vs_steer: Mapping[str, Any] | None = None
    timings: Mapping[str, Any] | None = None
    has_transfer: bool = field(default=False)

    def row(self, layer: int) -> LayerResult:
        return self.rows[self.layers.index(layer)]

    def to_dict(self) -> dict[str, Any]:
        rows, methods = self.rows, list(self.methods)
        out: dict[str, Any] = {
            "kind": "probe",
            "steerlab_version": self.steerlab_version,
            "model": dict(self.model),
            "data": dict(self.data),
            "config": dict(self.config),
            "layers": list(self.layers),
            "methods": {m: [r.methods[m].to_dict() for r in rows] for m in methods},
            "controls": {
                "shuffled": _rows(rows, "shuffled"),
                "random": _rows(rows, "random"),
                "n_permutations": self.n_permutations,
                "n_random_directions": self.n_random_directions,
                "fit": dict(CONTROLS_FIT),
            },
            "erasure": {
                "fit": ERASURE_FIT,
                "after_leace": _rows(rows, "after_leace"),
                "after_mean_diff_ablation": _rows(rows, "after_mean_diff_ablation"),
                "held_out": {
                    "fit": HELD_OUT_FIT,
                    "before_erasure": _rows(rows, "held_out_before"),
                    "after_leace": _rows(rows, "held_out_leace"),
                    "after_mean_diff_ablation": _rows(rows, "held_out_mean_diff"),
                },
            },
            "agreement": {
                "methods": methods,
                "cosine": [r.cosine for r in rows],
                "reference": self.reference,
                "mean_cosine_to_reference": self.mean_cosine_to_reference,
            },
            "validation_accuracy": {m: [r.val[m] for r in rows] for m in methods},
            "best": {m: {"layer": self.best[m], "rule": BEST_RULE} for m in methods},
            "logistic_c": [r.c for r in rows],
            "logistic_c_validation": [r.c_val for r in rows],
            "sample_efficiency": {
                m: [p.to_dict() for p in pts] for m, pts in self.sample_efficiency.items()
            },
            "projections": {m: p.to_dict() for m, p in self.projections.items()},
        }
        if self.has_transfer:
            out["transfer"] = {
                m: [r.transfer[m].to_dict() for r in rows if r.transfer is not None]
                for m in methods
            }
        if self.read_vs_steer is not None:
            out["read_vs_steer"] = dict(self.read_vs_steer)
        if self.timings is not None:
            out["timings"] = dict(self.timings)
        return out
