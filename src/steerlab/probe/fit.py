"""Reading directions at one layer: fit every method on train activations, classify test ones.

Every method yields a unit direction ``u`` signed so the positive class projects higher. A
direction classifies by projection against the midpoint of the two train-class means along it,
so methods differ only in the direction they find (logistic regression is no exception: its own
intercept is not used). AUROC is threshold-free.

* ``mean_diff``: mu_pos - mu_neg (ActAdd / CAA, and the direction LEACE removes for one label);
* ``pca``: RepE LAT, the top singular vector of the differences of positive/negative pairs
  (by index when the sets are paired, else random pairs), signed on train;
* ``logistic``: scikit-learn logistic regression on standardized activations, C chosen by
  cross-validation on train only;
* ``lda``: shrinkage LDA (a whitened mean difference);
* ``leace``: the direction LEACE (concept-erasure) erases.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..metrics.stats import mean_ci, percentile_bootstrap
from .config import PROBE_METHODS

__all__ = ["PROBE_METHODS", "Scored", "choose_c", "directions", "erase_leace", "score"]
__all__ += ["projection_accuracy", "projection_summary"]

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
            # RepE pairs each positive with a negative: by index when the sets are paired
            # (equal sizes, as contrast sets are written), else at random.
            if len(xp) == len(xn):
                diffs = xp - xn
            else:
                rng = np.random.default_rng(seed)
                k = min(len(xp), len(xn))
                diffs = xp[rng.permutation(len(xp))[:k]] - xn[rng.permutation(len(xn))[:k]]
            v = np.linalg.svd(diffs, full_matrices=False)[2][0]
        elif m == "logistic":
            v = _logistic(x, y, c)
        elif m == "lda":
            from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

            v = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, y).coef_[0]
        elif m == "leace":
            import torch
            from concept_erasure import LeaceFitter

            f = LeaceFitter(x.shape[1], 1, dtype=torch.float64)
            f.update(torch.from_numpy(x), torch.from_numpy(y[:, None]))
            v = f.eraser.proj_left[:, 0].numpy()
        else:
            raise ValueError(f"unknown probe method {m!r}")
        out[m] = _unit(v, md)
    return out


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
    lo, hi = mean_ci(hits, seed=seed, n=1000)
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
