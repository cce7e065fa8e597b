"""Reading directions at one layer: fit every method on train activations, classify test ones.

Every method yields a unit direction ``u`` signed so the positive class projects higher. A
direction classifies by projection against the midpoint of the two train-class means along it,
so methods differ only in the direction they find (logistic regression is no exception: its own
intercept is not used). AUROC is threshold-free.

* ``mean_diff``: mu_pos - mu_neg (ActAdd / CAA);
* ``pca``: RepE LAT, the top principal component of the *centered* differences of
  positive/negative pairs (by index when the sets are paired, else random pairs), signed on
  train. See :func:`pca_direction` for the centering RepE uses and the one used here;
* ``logistic``: scikit-learn logistic regression on standardized activations, C chosen by
  cross-validation on train only;
* ``lda``: shrinkage LDA (a whitened mean difference);
* ``leace``: LEACE's read-out, the row ``proj_right`` of its eraser, i.e. the mean difference
  whitened twice by the eraser's ``W = Sigma^{-1/2}``. See :func:`leace_readout`.

Accuracy is a rate of hits, so its interval is Wilson's (:func:`~steerlab.metrics.stats.
proportion_ci`); AUROC gets a percentile bootstrap (:func:`~steerlab.metrics.stats.
percentile_bootstrap`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..metrics.stats import percentile_bootstrap, proportion_ci
from .config import PROBE_METHODS

__all__ = ["PROBE_METHODS", "Scored", "choose_c", "directions", "erase_leace", "score"]
__all__ += ["leace_readout", "pca_direction", "projection_accuracy", "projection_summary"]

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


def _unit(v: np.ndarray, md: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n == 0:
        return np.zeros_like(v)
    v = v / n
    return -v if v @ md < 0 else v


def choose_c(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Logistic regularization by 3-fold cross-validation on train (never on test)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler

    folds = int(min(3, np.bincount(y.astype(int)).min()))
    if folds < 2:
        return 1.0
    xs = StandardScaler().fit_transform(x)
    cv = LogisticRegressionCV(Cs=list(C_GRID), cv=folds, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():  # scikit-learn's notices of changing defaults
        warnings.simplefilter("ignore", FutureWarning)
        return float(cv.fit(xs, y).C_[0])


def _logistic(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=2000).fit(sc.transform(x), y)
    return clf.coef_[0] / np.where(sc.scale_ == 0, 1.0, sc.scale_)


def directions(
    xp: np.ndarray,
    xn: np.ndarray,
    *,
    c: float = 1.0,
    methods: Sequence[str] = PROBE_METHODS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Unit directions (D,) per method, fitted on positive ``xp`` and negative ``xn``."""
    md = xp.mean(0) - xn.mean(0)
    x = np.concatenate([xp, xn])
    y = np.r_[np.ones(len(xp)), np.zeros(len(xn))]
    out: dict[str, np.ndarray] = {}
    for m in methods:
        if m == "mean_diff":
            v = md
        elif m == "pca":
            v = pca_direction(xp, xn, seed=seed)
        elif m == "logistic":
            v = _logistic(x, y, c)
        elif m == "lda":
            from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

            v = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, y).coef_[0]
        elif m == "leace":
            v = leace_readout(x, y)
        else:
            raise ValueError(f"unknown probe method {m!r}")
        out[m] = _unit(v, md)
    return out


def pca_direction(xp: np.ndarray, xn: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """RepE's LAT reader: the top principal component of pair differences, centered.

    Pairs are by index when the sets have equal sizes (contrast sets are written paired), else
    random. RepE's ``PCARepReader`` subtracts the mean of the differences (``recenter``) and
    fits scikit-learn's PCA, which centers again; its dataset builders shuffle the order inside
    each pair, so its differences carry random signs and their mean is near zero. Here every
    difference is ``pos - neg`` (sign fixed), and the mean difference is subtracted before the
    SVD, as scikit-learn's ``PCA`` (and repeng's ``pca_diff``) do: the component is the axis
    along which the pairs' differences *vary* most, not the mean difference again (the
    uncentered SVD of fixed-sign differences, used before, nearly collapsed onto mean_diff).

    Returns:
        (D,) the top right singular vector of the centered differences (sign not fixed).
    """
    if len(xp) == len(xn):
        diffs = xp - xn
    else:
        rng = np.random.default_rng(seed)
        k = min(len(xp), len(xn))
        diffs = xp[rng.permutation(len(xp))[:k]] - xn[rng.permutation(len(xn))[:k]]
    diffs = diffs - diffs.mean(0)  # (K, D), centered
    return np.linalg.svd(diffs, full_matrices=False)[2][0]


def leace_readout(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LEACE's read-out direction for one binary concept.

    LEACE erases with ``x - proj_left @ proj_right @ (x - mean)``, where, for whitening ``W =
    Sigma_xx^{-1/2}`` (pseudo-inverse root of the shrunk covariance) and ``u`` the unit vector
    along ``W sigma_xz``: ``proj_left = W^+ u`` and ``proj_right = u^T W``. ``proj_left`` is
    ``W^+ W sigma_xz``, i.e. the cross-covariance, proportional to the mean difference, so it
    would make "cosine 1.00 with mean_diff" an identity. What the eraser *reads* (the only
    linear functional of x it changes) is ``proj_right ~ W W sigma_xz = Sigma^+ (mu_pos -
    mu_neg)``: the mean difference whitened, like LDA's. The trace constraint is turned off so
    ``proj_right`` is exactly ``u^T W`` (it only mixes in an orthogonal projection after the
    fact, to bound the erased covariance).

    Returns:
        (D,) ``proj_right[0]`` of the eraser fitted on ``x`` (N, D) and labels ``y`` (N,).
    """
    import torch
    from concept_erasure import LeaceFitter

    f = LeaceFitter(x.shape[1], 1, dtype=torch.float64, constrain_cov_trace=False)
    f.update(torch.from_numpy(np.asarray(x, dtype=np.float64)), torch.from_numpy(y[:, None]))
    return f.eraser.proj_right[0].numpy()


@dataclass(frozen=True)
class Scored:
    """How one direction classifies a test set."""

    accuracy: float
    accuracy_ci: tuple[float, float]
    auroc: float
    auroc_ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.accuracy_ci),
            "auroc": self.auroc,
            "auroc_ci": list(self.auroc_ci),
        }


def _auroc_ci(s: np.ndarray, y: np.ndarray, seed: int, n: int = 1000) -> tuple[float, float]:
    """Percentile bootstrap of the AUROC: Mann-Whitney from tie-averaged ranks of every
    resample at once, O(n log n) per resample; resamples with one class only are left out."""
    from scipy.stats import rankdata

    def auroc(idx: np.ndarray) -> np.ndarray:
        ranks, yy = rankdata(s[idx], axis=1), y[idx]
        n1 = yy.sum(1)
        n0 = yy.shape[1] - n1
        ok = (n1 > 0) & (n0 > 0)
        u = (ranks * yy).sum(1) - n1 * (n1 + 1) / 2
        out = np.full(len(idx), np.nan)
        out[ok] = u[ok] / (n1[ok] * n0[ok])
        return out

    return percentile_bootstrap(auroc, len(y), seed=seed, n=n)


def score(
    u: np.ndarray,
    xp: np.ndarray,
    xn: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    intervals: bool = True,
    seed: int = 0,
) -> Scored:
    """Classify ``x_test`` by projection on ``u`` against the midpoint of the train means."""
    from sklearn.metrics import roc_auc_score

    thr = 0.5 * (float((xp @ u).mean()) + float((xn @ u).mean()))
    s = x_test @ u
    hits = ((s > thr).astype(float) == y_test).astype(float)
    acc = float(hits.mean())
    auroc = float(roc_auc_score(y_test, s)) if np.ptp(s) > 0 else 0.5
    if not intervals:
        return Scored(acc, (acc, acc), auroc, (auroc, auroc))
    lo, hi = proportion_ci(int(hits.sum()), len(hits))  # Wilson: accuracy is a rate
    return Scored(acc, (lo, hi), auroc, _auroc_ci(s, y_test, seed))


def erase_leace(
    xp: np.ndarray, xn: np.ndarray, *others: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """LEACE fitted on train, applied to train and to every other set."""
    import torch
    from concept_erasure import LeaceFitter

    x = np.concatenate([xp, xn])
    y = np.r_[np.ones(len(xp)), np.zeros(len(xn))]
    f = LeaceFitter(x.shape[1], 1, dtype=torch.float64)
    f.update(torch.from_numpy(x), torch.from_numpy(y[:, None]))
    er = f.eraser

    def apply(a: np.ndarray) -> np.ndarray:
        return er(torch.from_numpy(a)).numpy()

    return apply(xp), apply(xn), [apply(o) for o in others]


def _finite_list(values: Any) -> list[float]:
    return [float(v) for v in values or [] if _is_num(v)]


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def projection_accuracy(p: Mapping[str, Any]) -> float | None:
    """The share of test examples on their class's side of the threshold (positive above),
    as :func:`score` counts, from ``{"pos", "neg", "threshold"}``; None without a threshold or
    examples. Non-finite projections are left out."""
    thr = p.get("threshold")
    pos, neg = _finite_list(p.get("pos")), _finite_list(p.get("neg"))
    if not _is_num(thr) or not (pos or neg):
        return None
    return (sum(v > thr for v in pos) + sum(v <= thr for v in neg)) / (len(pos) + len(neg))


def projection_summary(p: Mapping[str, Any]) -> dict[str, float | None]:
    """Each class's mean projection and :func:`projection_accuracy`, for the report to show
    beside the projections (None where a class has no finite projection)."""
    pos, neg = _finite_list(p.get("pos")), _finite_list(p.get("neg"))
    return {
        "pos_mean": sum(pos) / len(pos) if pos else None,
        "neg_mean": sum(neg) / len(neg) if neg else None,
        "accuracy": projection_accuracy(p),
    }
