"""Extract a Direction from two contrast sets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._version import __version__
from ..capture import PositionSpec, Site, capture_stats, resolve_layers
from ..errors import DataError
from ..models.load import LoadedModel
from .artifact import LAYER_CONVENTION, Direction
from .methods import METHODS, fit_layer

__all__ = ["check_sets", "data_hash", "extract"]

MAX_IMBALANCE = 4.0


def data_hash(*sets: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([list(s) for s in sets]).encode()).hexdigest()[:16]


def check_sets(
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    paired: bool,
    allow_unbalanced: bool = False,
    min_size: int = 2,
) -> None:
    """Refuse empty, tiny or unbalanced contrast sets with a message that says which."""
    for name, s in (("positive", positive), ("negative", negative)):
        if len(s) == 0:
            raise DataError(f"the {name} set is empty")
        if len(s) < min_size:
            raise DataError(f"the {name} set has {len(s)} prompt(s); need at least {min_size}")
        if any(not str(p).strip() for p in s):
            raise DataError(f"the {name} set contains an empty prompt")
    a, b = len(positive), len(negative)
    if paired and a != b:
        raise DataError(f"this method pairs prompts: sets must be the same size (got {a} and {b})")
    if not allow_unbalanced and max(a, b) > MAX_IMBALANCE * min(a, b):
        raise DataError(
            f"unbalanced sets ({a} positive vs {b} negative, more than {MAX_IMBALANCE:g}x); "
            "balance them or pass --allow-unbalanced"
        )


def extract(
    lm: LoadedModel,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    method: str = "mean_diff",
    layers: str | int | Sequence[int] | None = "all",
    position: PositionSpec = "last",
    site: Site = "resid_pre",
    batch_size: int = 16,
    chat: bool | None = None,
    allow_unbalanced: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Direction:
    """Fit one vector per layer that separates ``positive`` from ``negative`` prompts.

    The forward pass stops after the deepest requested layer. Means are accumulated in float64;
    methods other than ``mean_diff`` also keep one (D,) sample per prompt and layer.

    Args:
        lm: from :func:`steerlab.load_model`.
        positive: prompt texts of the concept (the chat template is applied when the model
            has one).
        negative: prompt texts of its opposite, rendered the same way.
        method: ``mean_diff`` | ``pca`` | ``logistic`` | ``leace``.
        layers: ``all``, ``L``, ``A:B`` or a list.
        position: ``last`` | ``instruction-end`` | ``mean`` | a negative offset.
        site: ``resid_pre`` (input of block l) or ``resid_post`` (its output).
        progress: called with the number of prompts done after each batch.

    Returns:
        A :class:`Direction` with metadata describing the run.

    Example:
        >>> lm = steerlab.load_model("smollm2-135m")  # doctest: +SKIP
        >>> d = extract(lm, ["I love it"] * 4, ["I hate it"] * 4, layers="10")  # doctest: +SKIP
    """
    if method not in METHODS:
        raise DataError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    spec = METHODS[method]
    check_sets(positive, negative, paired=spec.paired, allow_unbalanced=allow_unbalanced)
    layer_list = resolve_layers(layers, lm.info.n_layers)
    kw: dict[str, Any] = dict(
        site=site,
        position=position,
        batch_size=batch_size,
        keep_samples=spec.needs_samples,
        chat=chat,
        progress=progress,
    )
    with torch.inference_mode():
        pos = capture_stats(lm.model, lm.tokenizer, lm.adapter, positive, layer_list, **kw)
        neg = capture_stats(lm.model, lm.tokenizer, lm.adapter, negative, layer_list, **kw)
    xp = pos.stacked() if spec.needs_samples else None
    xn = neg.stacked() if spec.needs_samples else None
    rows = []
    for i in range(len(layer_list)):
        rows.append(
            fit_layer(
                method,
                pos.mean[i],
                neg.mean[i],
                None if xp is None else xp[:, i],
                None if xn is None else xn[:, i],
            )
        )
    meta = {
        "model": lm.info.to_dict(),
        "site": site,
        "method": method,
        "position": position,
        "layer_convention": LAYER_CONVENTION,
        "data_hash": data_hash(positive, negative),
        "counts": {"positive": len(positive), "negative": len(negative)},
        "chat_template": bool(getattr(lm.tokenizer, "chat_template", None))
        if chat is None
        else chat,
        "steerlab_version": __version__,
        "norms": [round(float(r.norm()), 6) for r in rows],
    }
    return Direction(torch.stack(rows), tuple(layer_list), meta)
