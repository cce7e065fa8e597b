"""Direction-finding methods, registered in one table.

Every method maps the statistics of a positive and a negative class at one layer to a (D,)
vector. Scale convention, so that coefficients mean the same across methods:

* ``mean_diff`` returns ``mu_pos - mu_neg`` itself (the ActAdd / CAA vector).
* the others return a unit direction ``u``, signed so that ``u . (mu_pos - mu_neg) > 0`` and
  scaled by that projection: adding it with coefficient 1 moves the negative mean onto the
  positive mean *along u*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..errors import DataError

__all__ = ["METHODS", "Method", "MethodSpec", "fit_layer"]

Method = Literal["mean_diff", "pca", "logistic", "leace"]


@dataclass(frozen=True)
class MethodSpec:
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    needs_samples: bool
    paired: bool
    doc: str


def _scaled(u: torch.Tensor, md: torch.Tensor) -> torch.Tensor:
    u = u / u.norm().clamp_min(1e-12)
    proj = float(u @ md)
    if proj < 0:
        u, proj = -u, -proj
    return u * proj


def _mean_diff(
    mu_p: torch.Tensor, mu_n: torch.Tensor, _xp: torch.Tensor, _xn: torch.Tensor
) -> torch.Tensor:
    return mu_p - mu_n


def _pca(
    mu_p: torch.Tensor, mu_n: torch.Tensor, xp: torch.Tensor, xn: torch.Tensor
) -> torch.Tensor:
    # RepE-style LAT on paired differences. The second moment (uncentered) keeps the shared
    # offset of the pairs: centered PCA would discard exactly the mean difference.
    diffs = (xp - xn).double()
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    return _scaled(vh[0], mu_p - mu_n)


def _logistic(
    mu_p: torch.Tensor, mu_n: torch.Tensor, xp: torch.Tensor, xn: torch.Tensor
) -> torch.Tensor:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = torch.cat([xp, xn]).double().numpy()
    y = np.r_[np.ones(len(xp)), np.zeros(len(xn))]
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(x), y)
    # Back to raw coordinates: w_raw = w_std / sigma.
    w = clf.coef_[0] / np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    return _scaled(torch.from_numpy(w), mu_p - mu_n)


def _leace(
    mu_p: torch.Tensor, mu_n: torch.Tensor, xp: torch.Tensor, xn: torch.Tensor
) -> torch.Tensor:
    from concept_erasure import LeaceFitter

    d = xp.shape[1]
    fitter = LeaceFitter(d, 1, dtype=torch.float64)
    fitter.update(xp.double(), torch.ones(len(xp), 1, dtype=torch.float64))
    fitter.update(xn.double(), torch.zeros(len(xn), 1, dtype=torch.float64))
    # The eraser removes span(proj_left): that is the direction the concept lives in.
    u = fitter.eraser.proj_left[:, 0]
    return _scaled(u, mu_p - mu_n)


METHODS: dict[str, MethodSpec] = {
    "mean_diff": MethodSpec(_mean_diff, False, False, "difference of class means (ActAdd/CAA)"),
    "pca": MethodSpec(_pca, True, True, "top singular vector of paired differences (RepE LAT)"),
    "logistic": MethodSpec(_logistic, True, False, "logistic-regression probe weights (sklearn)"),
    "leace": MethodSpec(_leace, True, False, "LEACE erasure direction (concept-erasure)"),
}


def fit_layer(
    method: str,
    mu_pos: torch.Tensor,
    mu_neg: torch.Tensor,
    x_pos: torch.Tensor | None = None,
    x_neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fit one layer's vector. ``x_*`` are (N, D) samples for methods that need them."""
    if method not in METHODS:
        raise DataError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    spec = METHODS[method]
    if spec.needs_samples and (x_pos is None or x_neg is None):
        raise DataError(f"method {method} needs samples")
    if spec.paired and x_pos is not None and x_neg is not None and len(x_pos) != len(x_neg):
        raise DataError(
            f"method {method} needs paired sets of equal size; got {len(x_pos)} and {len(x_neg)}"
        )
    empty = torch.empty(0)
    return spec.fn(
        mu_pos.double(),
        mu_neg.double(),
        x_pos if x_pos is not None else empty,
        x_neg if x_neg is not None else empty,
    ).float()
