"""``steerlab probe``: where a concept is linearly readable, by every method side by side.

One capture pass per split (cached in the run as safetensors, so a long run resumes) feeds
every method, control, draw and layer:

* per layer and method: test accuracy (Wilson 95% interval) and AUROC (bootstrap interval);
* nulls that must fail, each many draws (:mod:`.nulls`): logistic regression on permuted train
  labels, each permutation refitting its own C on train only; random unit directions signed on
  train; each summarized by its mean and spread and each method's percentile within it;
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
from dataclasses import dataclass, field, replace
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
from .fit import Scored, choose_c, directions, erase_leace, projection_summary, score
from .nulls import permutation_null, random_direction_null, summarize_null
from .result import EfficiencyPoint, LayerResult, ProbeResult, Projection

__all__ = ["ProbeConfig", "ProbeResult", "check_config", "run_probe"]


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


def _validation(xp: np.ndarray, xn: np.ndarray, cfg: ProbeConfig) -> tuple[dict[str, float], float]:
    """Accuracy of each method on a validation part of train, fitted on the rest, for choosing
    the layer without looking at test; the logistic C is cross-validated on the fitting part
    only, so the validation examples never choose it."""
    rng = np.random.default_rng(cfg.seed + 1)
    vp = rng.permutation(len(xp))[: max(2, round(len(xp) * cfg.val_fraction))]
    # paired sets (equal sizes, as contrast sets are written) keep their pairs on one side:
    # a validation example whose partner sits in the fitting part is a leak, and on paired
    # true/false statements it pushed validation accuracy far below chance
    vn = (
        vp
        if len(xp) == len(xn)
        else rng.permutation(len(xn))[: max(2, round(len(xn) * cfg.val_fraction))]
    )
    fp, fn_ = np.delete(xp, vp, 0), np.delete(xn, vn, 0)
    vx = np.concatenate([xp[vp], xn[vn]])
    vy = np.r_[np.ones(len(vp)), np.zeros(len(vn))]
    c_val = choose_c(np.concatenate([fp, fn_]), np.r_[np.ones(len(fp)), np.zeros(len(fn_))])
    vdirs = directions(fp, fn_, c=c_val, methods=cfg.methods, seed=cfg.seed)
    val = {m: score(u, fp, fn_, vx, vy, intervals=False).accuracy for m, u in vdirs.items()}
    return val, c_val


def _erasure(
    xp: np.ndarray, xn: np.ndarray, xt: np.ndarray, yt: np.ndarray, c: float, cfg: ProbeConfig
) -> dict[str, Scored]:
    """Erasure, as the issue defines it: eraser and fresh logistic probe both fitted on train,
    scored on erased test. Equal class means make w = 0 optimal for that probe, so it sits at
    chance by construction; the held-out variant fits the eraser on one half of train and the
    probe on the other half, which shows whether the erasure generalizes."""
    out = {}
    out["after_leace"], out["after_mean_diff_ablation"] = _erased(xp, xn, xp, xn, xt, yt, c, cfg)
    h = np.random.default_rng(cfg.seed + 3)
    hp, hn = h.permutation(len(xp)), h.permutation(len(xn))
    ap, bp = xp[hp[: len(xp) // 2]], xp[hp[len(xp) // 2 :]]
    an, bn = xn[hn[: len(xn) // 2]], xn[hn[len(xn) // 2 :]]
    bu = directions(bp, bn, c=c, methods=("logistic",))["logistic"]
    out["held_out_before"] = score(bu, bp, bn, xt, yt, seed=cfg.seed)
    out["held_out_leace"], out["held_out_mean_diff"] = _erased(ap, an, bp, bn, xt, yt, c, cfg)
    return out


def _layer(
    tr: _Acts, te: _Acts, tf: _Acts | None, i: int, cfg: ProbeConfig, layer: int | None = None
) -> LayerResult:
    """Every method, the nulls, erasure and agreement at layer index ``i``."""
    xp, xn, xt, yt = tr.pos[:, i], tr.neg[:, i], te.x[:, i], te.y
    c = choose_c(tr.x[:, i], tr.y, cfg.seed)
    dirs = directions(xp, xn, c=c, methods=cfg.methods, seed=cfg.seed)
    methods = {m: score(u, xp, xn, xt, yt, seed=cfg.seed) for m, u in dirs.items()}
    val, c_val = _validation(xp, xn, cfg)
    real = {m: s.accuracy for m, s in methods.items()}
    perm, cs = permutation_null(
        tr.x[:, i], tr.y, xt, yt, n=cfg.permutations, seed=cfg.seed * 1_000_003 + 17 * i + 2
    )
    rand = random_direction_null(xp, xn, xt, yt, n=cfg.random_directions, seed=cfg.seed * 7919 + i)
    names = list(dirs)
    transfer = None
    if tf is not None:
        transfer = {m: score(u, xp, xn, tf.x[:, i], tf.y, seed=cfg.seed) for m, u in dirs.items()}
    return LayerResult(
        layer=i if layer is None else layer,
        c=c,
        c_val=c_val,
        dirs=dirs,
        methods=methods,
        val=val,
        shuffled=summarize_null(perm, real, cs),
        random=summarize_null(rand, real),
        **_erasure(xp, xn, xt, yt, c, cfg),
        cosine=[[float(dirs[a] @ dirs[b]) for b in names] for a in names],
        transfer=transfer,
    )


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
) -> tuple[EfficiencyPoint, ...]:
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
        out.append(EfficiencyPoint(k, float(np.mean(accs)), (float(lo), float(hi)), len(accs)))
    return tuple(out)


def check_config(cfg: ProbeConfig, data: ProbeData, lm: LoadedModel) -> tuple[list[int], list[int]]:
    """The layers and training sizes, or a one-line error before anything is written."""
    data.check()
    layers = resolve_layers(cfg.layers, lm.info.n_layers)
    return layers, _sizes(cfg, min(len(data.train_pos), len(data.train_neg)))


def _projections(
    tr: _Acts, te: _Acts, rows: list[LayerResult], layers: list[int], best: dict[str, int]
) -> dict[str, Projection]:
    """Each method's test projections at its best layer (the per-prompt scores), and its
    threshold: the midpoint of the train-class mean projections, as :func:`.fit.score`
    classifies; with each class's mean projection and the share on its side."""
    out = {}
    for m, lay in best.items():
        i = layers.index(lay)
        u = rows[i].dirs[m]
        thr = 0.5 * (float((tr.pos[:, i] @ u).mean()) + float((tr.neg[:, i] @ u).mean()))
        pos, neg = (te.pos[:, i] @ u).tolist(), (te.neg[:, i] @ u).tolist()
        summ = projection_summary({"pos": pos, "neg": neg, "threshold": thr})
        out[m] = Projection(
            lay, tuple(pos), tuple(neg), thr, summ["pos_mean"], summ["neg_mean"], summ["accuracy"]
        )
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


def _agreement(
    rows: list[LayerResult], layers: list[int], methods: list[str], best: dict[str, int]
) -> tuple[str, float | None]:
    """The reference method (mean_diff when run) and, at its best layer, its mean cosine with
    the other methods' directions."""
    ref = "mean_diff" if "mean_diff" in methods else methods[0]
    row = rows[layers.index(best[ref])].cosine[methods.index(ref)]
    others = [v for m, v in zip(methods, row, strict=True) if m != ref and math.isfinite(v)]
    return ref, (sum(others) / len(others) if others else None)


def _probe_result(
    lm: LoadedModel,
    data: ProbeData,
    cfg: ProbeConfig,
    layers: list[int],
    rows: list[LayerResult],
    sizes: list[int],
    tr: _Acts,
    te: _Acts,
    run: Run,
) -> ProbeResult:
    """Choose each method's layer on validation, then its sample efficiency and projections."""
    methods = list(cfg.methods)
    best = {m: layers[int(np.argmax([r.val[m] for r in rows]))] for m in methods}
    with run.step("sample efficiency"):
        eff = {}
        for m in methods:
            i = layers.index(best[m])
            eff[m] = _efficiency(tr, te, i, rows[i].c, sizes, cfg, m)
    ref, mean_cos = _agreement(rows, layers, methods, best)
    return ProbeResult(
        steerlab_version=__version__,
        model=lm.info.to_dict(),
        data={"counts": data.counts(), "split": data.split},
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        layers=tuple(layers),
        methods=tuple(methods),
        rows=tuple(rows),
        best=best,
        sample_efficiency=eff,
        projections=_projections(tr, te, rows, layers, best),
        n_permutations=cfg.permutations,
        n_random_directions=cfg.random_directions,
        reference=ref,
        mean_cosine_to_reference=mean_cos,
        has_transfer=bool(rows) and rows[0].transfer is not None,
    )


def run_probe(
    lm: LoadedModel,
    data: ProbeData,
    cfg: ProbeConfig,
    out: str | Path,
    *,
    steer_behavior: Any = None,
    progress: Any = None,
    status: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Run a probe into ``out`` (``probe.json``, ``report.html``, direction files).

    Returns:
        The :class:`~.result.ProbeResult`; ``result.to_dict()`` is what ``probe.json`` holds.

    Example:
        >>> res = run_probe(lm, make_probe_data("builtin:happy", "builtin:sad"),
        ...                 ProbeConfig(layers="6,18"), "runs/probe")  # doctest: +SKIP
        >>> res.n_permutations  # doctest: +SKIP
        20
    """
    from .report import write_probe_report
    from .steer_check import read_vs_steer

    layers, sizes = check_config(cfg, data, lm)
    run = Run(out, kind="probe", lm=lm, progress=progress, status=status)
    with run.step("capture"):
        tr, te, tf = _capture_all(run, lm, data, layers, cfg)
    rows: list[LayerResult] = []
    with run.step("probes"), run.bar("probes per layer", len(layers)) as adv:
        for i, lay in enumerate(layers):
            rows.append(_layer(tr, te, tf, i, cfg, lay))
            adv(1)
    result = _probe_result(lm, data, cfg, layers, rows, sizes, tr, te, run)
    save_directions(run, lm, list(cfg.methods), cfg.position, layers, rows)
    if steer_behavior is not None:
        with run.step("read vs steer"):
            rvs = read_vs_steer(run, lm, steer_behavior, result, cfg)
        result = replace(result, read_vs_steer=rvs)
    result = replace(result, timings=run.timing_report())
    report = result.to_dict()
    run.write_json("probe.json", report)
    write_probe_report(run, report)
    return result
