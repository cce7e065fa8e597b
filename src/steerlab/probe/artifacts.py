"""The probe's direction files: one :class:`~steerlab.directions.Direction` per method
(``probe_{method}.safetensors``, usable by ``steerlab generate --vector``) and every method in
one ``probes.safetensors``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._version import __version__
from ..directions.artifact import LAYER_CONVENTION, Direction
from ..io.safetensors_io import save_atomic
from ..models.load import LoadedModel
from ..runs import Run
from .result import LayerResult

__all__ = ["save_directions"]


def save_directions(
    run: Run,
    lm: LoadedModel,
    methods: Sequence[str],
    position: str,
    layers: list[int],
    per: Sequence[LayerResult],
) -> None:
    """Write each method's unit directions (``per[i].dirs[method]`` at ``layers[i]``)."""
    methods = list(methods)
    for m in methods:
        vecs = torch.tensor(np.stack([p.dirs[m] for p in per]), dtype=torch.float32)
        meta = {
            "model": lm.info.to_dict(),
            "site": "resid_pre",
            "method": m,
            "position": position,
            "layer_convention": LAYER_CONVENTION,
            "steerlab_version": __version__,
            "unit": True,
            "made_by": "steerlab probe",
        }
        Direction(vecs, tuple(layers), meta).save(run.path(f"probe_{m}.safetensors"))
    # every method in one file as well: {method: (L, D)} unit directions, layers, metadata
    save_atomic(
        {m: torch.tensor(np.stack([p.dirs[m] for p in per]), dtype=torch.float32) for m in methods}
        | {"layers": torch.tensor(layers)},
        run.path("probes.safetensors"),
        {
            "kind": "probes",
            "model": lm.info.to_dict(),
            "methods": methods,
            "position": position,
            "layer_convention": LAYER_CONVENTION,
        },
    )
