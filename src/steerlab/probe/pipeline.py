"""``steerlab probe``: where a concept is linearly readable, by every method side by side.

One capture pass per split (cached in the run as safetensors, so a long run resumes) feeds
every method, control, draw and layer:

* per layer and method: test accuracy and AUROC with bootstrap 95% intervals;
* controls that must fail: logistic regression on shuffled train labels, a random direction;
* erasure: a fresh logistic probe after LEACE (fitted on train), and after projecting out the
  mean-difference direction alone;
* agreement: cosine between the methods' directions;
* best layer per method, chosen on a validation part of train (never on test);
* sample efficiency at each method's best layer: accuracy against the number of training
  examples per class, over random draws;
* each method's test projections at its best layer, with its threshold;
* transfer to another dataset, and (``steer_check``) whether each method's direction also
  steers the behaviour, at a norm-matched strength, with the sweep's engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..capture import capture_stats, resolve_layers
from ..errors import DataError
from ..metrics.stats import percentile_interval
from ..models.load import LoadedModel
from ..runs import Run
from .artifacts import save_directions
from .config import ProbeConfig
from .data import ProbeData
from .fit import (
    Scored,
    choose_c,
    directions,
    erase_leace,
    projection_summary,
    score,
)

__all__ = ["ProbeConfig", "check_config", "run_probe"]


@dataclass
class _Acts:
    """(N, L, D) float32 activations of one split's two classes."""

    pos: np.ndarray
    neg: np.ndarray
    y: np.ndarray = field(init=False)
    x: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.x = np.concatenate([self.pos, self.neg])
        self.y = np.r_[np.ones(len(self.pos)), np.zeros(len(self.neg))]


def _sizes(cfg: ProbeConfig, n_min: int) -> list[int]:
    out = []
    if "auto" in cfg.train_sizes:
        out = [2**i for i in range(2, n_min.bit_length()) if 2**i < n_min] + [n_min]
    for s in cfg.train_sizes:
        if s == "auto":
            continue
        k = n_min if s == "all" else int(s)
        if k > n_min:
            raise DataError(
                f"--train-sizes {k} is more than the {n_min} training examples of the smaller class"
            )
        if k < 2:
            raise DataError("--train-sizes must be at least 2 per class")
        out.append(k)
    return sorted(set(out))


def _capture(
    run: Run, lm: LoadedModel, texts: Sequence[str], layers: list[int], cfg: ProbeConfig, name: str
) -> np.ndarray:
    key = [list(texts), layers, cfg.position, cfg.chat]

    def compute() -> dict[str, torch.Tensor]:
        with run.bar(f"capture {name}", len(texts)) as adv, torch.inference_mode():
            st = capture_stats(
                lm.model,
                lm.tokenizer,
                lm.adapter,
                texts,
                layers,
                position=cfg.position,
                batch_size=cfg.batch_size,  # type: ignore[arg-type]
                keep_samples=True,
                chat=cfg.chat,
                progress=adv,
            )
        return {"x": st.stacked().float()}

    return run.cache.tensors(f"acts-{name}", key, compute)["x"].numpy()


def _layer(tr: _Acts, te: _Acts, tf: _Acts | None, i: int, cfg: ProbeConfig) -> dict[str, Any]:
    xp, xn, xt, yt = tr.pos[:, i], tr.neg[:, i], te.x[:, i], te.y
    c = choose_c(tr.x[:, i], tr.y, cfg.seed)
    dirs = directions(xp, xn, c=c, methods=cfg.methods, seed=cfg.seed)
    res: dict[str, Any] = {"c": c, "dirs": dirs}
    res["methods"] = {m: score(u, xp, xn, xt, yt, seed=cfg.seed).to_dict() for m, u in dirs.items()}
    # validation part of train, for choosing the best layer without looking at test
    rng = np.random.default_rng(cfg.seed + 1)
    vp = rng.permutation(len(xp))[: max(2, round(len(xp) * cfg.val_fraction))]
    vn = rng.permutation(len(xn))[: max(2, round(len(xn) * cfg.val_fraction))]
    fp, fn_ = np.delete(xp, vp, 0), np.delete(xn, vn, 0)
    vx = np.concatenate([xp[vp], xn[vn]])
    vy = np.r_[np.ones(len(vp)), np.zeros(len(vn))]
    vdirs = directions(fp, fn_, c=c, methods=cfg.methods, seed=cfg.seed)
    res["val"] = {m: score(u, fp, fn_, vx, vy, intervals=False).accuracy for m, u in vdirs.items()}
    # controls that must fail
    shuffled = np.random.default_rng(cfg.seed + 2).permutation(tr.y)
    sx = tr.x[:, i]
    su = directions(sx[shuffled == 1], sx[shuffled == 0], c=c, methods=("logistic",))["logistic"]
    res["shuffled"] = score(su, sx[shuffled == 1], sx[shuffled == 0], xt, yt, seed=cfg.seed)
    g = np.random.default_rng(cfg.seed * 7919 + i)
    ru = g.standard_normal(xp.shape[1])
    ru /= np.linalg.norm(ru)
    res["random"] = score(ru, xp, xn, xt, yt, seed=cfg.seed)
    # Erasure, as the issue defines it: eraser and fresh logistic probe both fitted on train,
    # scored on erased test. Equal class means make w = 0 optimal for that probe, so it sits at
    # chance by construction; the held-out variant fits the eraser on one half of train and
    # the probe on the other half, which shows whether the erasure generalizes.
    res["after_leace"], res["after_mean_diff_ablation"] = _erased(xp, xn, xp, xn, xt, yt, c, cfg)
    h = np.random.default_rng(cfg.seed + 3)
    hp, hn = h.permutation(len(xp)), h.permutation(len(xn))
    ap, bp = xp[hp[: len(xp) // 2]], xp[hp[len(xp) // 2 :]]
    an, bn = xn[hn[: len(xn) // 2]], xn[hn[len(xn) // 2 :]]
    bu = directions(bp, bn, c=c, methods=("logistic",))["logistic"]
    res["held_out_before"] = score(bu, bp, bn, xt, yt, seed=cfg.seed)
    res["held_out_leace"], res["held_out_mean_diff"] = _erased(ap, an, bp, bn, xt, yt, c, cfg)
    names = list(dirs)
    res["cosine"] = [[float(dirs[a] @ dirs[b]) for b in names] for a in names]
    if tf is not None:
        res["transfer"] = {
            m: score(u, xp, xn, tf.x[:, i], tf.y, seed=cfg.seed).to_dict() for m, u in dirs.items()
        }
    return res


def _erased(
    ap: np.ndarray,
    an: np.ndarray,
    bp: np.ndarray,
    bn: np.ndarray,
    xt: np.ndarray,
    yt: np.ndarray,
    c: float,
    cfg: ProbeConfig,
) -> tuple[Scored, Scored]:
    """A fresh logistic probe on ``b`` and test after erasing what ``a`` shows: by LEACE, and
    by projecting out the mean-difference direction alone."""
    _, _, (ebp, ebn, et) = erase_leace(ap, an, bp, bn, xt)
    lu = directions(ebp, ebn, c=c, methods=("logistic",))["logistic"]
    leace = score(lu, ebp, ebn, et, yt, seed=cfg.seed)
    md = directions(ap, an, methods=("mean_diff",))["mean_diff"]

    def drop(a: np.ndarray) -> np.ndarray:
        return a - np.outer(a @ md, md)

    au = directions(drop(bp), drop(bn), c=c, methods=("logistic",))["logistic"]
    return leace, score(au, drop(bp), drop(bn), drop(xt), yt, seed=cfg.seed)


def _efficiency(
    tr: _Acts, te: _Acts, i: int, c: float, sizes: list[int], cfg: ProbeConfig, method: str
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(cfg.seed + 1000 + i)
    out = []
    for k in sizes:
        accs = []
        for _ in range(cfg.draws if k < min(len(tr.pos), len(tr.neg)) else 1):
            ip = rng.permutation(len(tr.pos))[:k]
            # paired sets (equal sizes) keep their pairs: PCA of differences needs them
            ineg = ip if len(tr.pos) == len(tr.neg) else rng.permutation(len(tr.neg))[:k]
            p, n = tr.pos[ip, i], tr.neg[ineg, i]
            u = directions(p, n, c=c, methods=(method,), seed=cfg.seed)[method]
            accs.append(score(u, p, n, te.x[:, i], te.y, intervals=False).accuracy)
        lo, hi = percentile_interval(accs)  # one draw: that accuracy, twice
        out.append(
            {
                "n_per_class": k,
                "accuracy": float(np.mean(accs)),
                "interval": [float(lo), float(hi)],
                "draws": len(accs),
            }
        )
    return out


def check_config(cfg: ProbeConfig, data: ProbeData, lm: LoadedModel) -> tuple[list[int], list[int]]:
    """The layers and training sizes, or a one-line error before anything is written."""
    data.check()
    layers = resolve_layers(cfg.layers, lm.info.n_layers)
    return layers, _sizes(cfg, min(len(data.train_pos), len(data.train_neg)))


def _projections(
    tr: _Acts, te: _Acts, per: list[dict[str, Any]], layers: list[int], best: dict[str, int]
) -> dict[str, Any]:
    """Each method's test projections at its best layer, and its threshold: the midpoint of
    the train-class mean projections, as :func:`.fit.score` classifies; with each class's mean
    projection and the share on its side (:func:`.fit.projection_summary`)."""
    out = {}
    for m, lay in best.items():
        i = layers.index(lay)
        u = per[i]["dirs"][m]
        thr = 0.5 * (float((tr.pos[:, i] @ u).mean()) + float((tr.neg[:, i] @ u).mean()))
        pos, neg = (te.pos[:, i] @ u).tolist(), (te.neg[:, i] @ u).tolist()
        out[m] = {"layer": lay, "pos": pos, "neg": neg, "threshold": thr}
        out[m] |= projection_summary(out[m])
    return out


def _capture_all(
    run: Run, lm: LoadedModel, data: ProbeData, layers: list[int], cfg: ProbeConfig
) -> tuple[_Acts, _Acts, _Acts | None]:
    """Train, test and (when given) transfer activations, each split's classes cached apart."""
    tr = _Acts(
        _capture(run, lm, data.train_pos, layers, cfg, "train-pos"),
        _capture(run, lm, data.train_neg, layers, cfg, "train-neg"),
    )
    te = _Acts(
        _capture(run, lm, data.test_pos, layers, cfg, "test-pos"),
        _capture(run, lm, data.test_neg, layers, cfg, "test-neg"),
    )
    tf = None
    if data.transfer_pos:
        tf = _Acts(
            _capture(run, lm, data.transfer_pos, layers, cfg, "transfer-pos"),
            _capture(run, lm, data.transfer_neg, layers, cfg, "transfer-neg"),
        )
    return tr, te, tf


def _per_layer(per: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """One :class:`.fit.Scored` entry of every layer, as JSON."""
    return [p[key].to_dict() for p in per]


def _agreement(
    per: list[dict[str, Any]], layers: list[int], methods: list[str], best: dict[str, int]
) -> dict[str, Any]:
    """Cosines between the methods' directions at every layer, and the page's summary: at the
    reference method's best layer (mean_diff when run), its mean cosine with the others."""
    ref = "mean_diff" if "mean_diff" in methods else methods[0]
    row = per[layers.index(best[ref])]["cosine"][methods.index(ref)]
    others = [v for m, v in zip(methods, row, strict=True) if m != ref and math.isfinite(v)]
    return {
        "methods": methods,
        "cosine": [p["cosine"] for p in per],
        "reference": ref,
        "mean_cosine_to_reference": sum(others) / len(others) if others else None,
    }


def _build_report(
    lm: LoadedModel,
    data: ProbeData,
    cfg: ProbeConfig,
    layers: list[int],
    per: list[dict[str, Any]],
    best: dict[str, int],
    eff: dict[str, list[dict[str, Any]]],
    projections: dict[str, Any],
) -> dict[str, Any]:
    """The ``probe.json`` dict, without transfer, read-vs-steer and timings."""
    methods = list(cfg.methods)
    return {
        "kind": "probe",
        "steerlab_version": __version__,
        "model": lm.info.to_dict(),
        "data": {"counts": data.counts(), "split": data.split},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "layers": layers,
        "methods": {m: [p["methods"][m] for p in per] for m in methods},
        "controls": {
            "shuffled": _per_layer(per, "shuffled"),
            "random": _per_layer(per, "random"),
        },
        "erasure": {
            "fit": "eraser and a fresh logistic probe both fitted on train, scored on erased "
            "test (at chance by construction: equal class means make zero weights optimal)",
            "after_leace": _per_layer(per, "after_leace"),
            "after_mean_diff_ablation": _per_layer(per, "after_mean_diff_ablation"),
            "held_out": {
                "fit": "eraser fitted on one half of train; a fresh logistic probe fitted on "
                "the other half, erased, and scored on erased test",
                "before_erasure": _per_layer(per, "held_out_before"),
                "after_leace": _per_layer(per, "held_out_leace"),
                "after_mean_diff_ablation": _per_layer(per, "held_out_mean_diff"),
            },
        },
        "agreement": _agreement(per, layers, methods, best),
        "validation_accuracy": {m: [p["val"][m] for p in per] for m in methods},
        "best": {
            m: {"layer": best[m], "rule": "highest accuracy on a validation part of train"}
            for m in methods
        },
        "logistic_c": [p["c"] for p in per],
        "sample_efficiency": eff,
        "projections": projections,
    }


def run_probe(
    lm: LoadedModel,
    data: ProbeData,
    cfg: ProbeConfig,
    out: str | Path,
    *,
    steer_behavior: Any = None,
    progress: Any = None,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run a probe into ``out``; returns the dict written as ``probe.json``."""
    from .report import write_probe_report
    from .steer_check import read_vs_steer

    layers, sizes = check_config(cfg, data, lm)
    run = Run(out, kind="probe", lm=lm, progress=progress, status=status)
    with run.step("capture"):
        tr, te, tf = _capture_all(run, lm, data, layers, cfg)
    per: list[dict[str, Any]] = []
    with run.step("probes"), run.bar("probes per layer", len(layers)) as adv:
        for i in range(len(layers)):
            per.append(_layer(tr, te, tf, i, cfg))
            adv(1)
    methods = list(cfg.methods)
    best = {m: layers[int(np.argmax([p["val"][m] for p in per]))] for m in methods}
    with run.step("sample efficiency"):
        eff = {}
        for m in methods:
            i = layers.index(best[m])
            eff[m] = _efficiency(tr, te, i, per[i]["c"], sizes, cfg, m)
    projections = _projections(tr, te, per, layers, best)
    report = _build_report(lm, data, cfg, layers, per, best, eff, projections)
    if tf is not None:
        report["transfer"] = {m: [p["transfer"][m] for p in per] for m in methods}
    save_directions(run, lm, list(cfg.methods), cfg.position, layers, per)
    if steer_behavior is not None:
        with run.step("read vs steer"):
            report["read_vs_steer"] = read_vs_steer(
                run, lm, steer_behavior, per, layers, cfg, report
            )
    report["timings"] = run.timing_report()
    run.write_json("probe.json", report)
    write_probe_report(run, report)
    return report
