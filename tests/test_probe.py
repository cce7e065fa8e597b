"""``steerlab probe``: methods on planted data, controls that must fail, erasure, splits, the
command's contract and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.directions.artifact import Direction
from steerlab.errors import DataError
from steerlab.probe import make_probe_data, read_labelled
from steerlab.probe.fit import _auroc_ci, directions, erase_leace, score


def _planted(n: int = 80, d: int = 24, gap: float = 2.5, seed: int = 0):
    """Train and test classes from one distribution: noise with a shared covariance, and the
    positive class shifted by ``gap`` along axis 3."""
    rng = np.random.default_rng(seed)
    true = np.zeros(d)
    true[3] = 1.0
    cov = rng.normal(size=(d, d)) * 0.3

    def draw(k: int) -> np.ndarray:
        return rng.normal(size=(k, d)) @ cov + rng.normal(size=(k, d))

    xp, xn = draw(n) + gap * true, draw(n)
    tp, tn = draw(n) + gap * true, draw(n)
    return xp, xn, tp, tn, true


def test_methods_read_a_planted_concept_and_controls_fail() -> None:
    xp, xn, tp, tn, true = _planted()
    xt, yt = np.concatenate([tp, tn]), np.r_[np.ones(len(tp)), np.zeros(len(tn))]
    dirs = directions(xp, xn)
    for m, u in dirs.items():
        assert abs(np.linalg.norm(u) - 1) < 1e-9
        s = score(u, xp, xn, xt, yt)
        assert s.accuracy_ci[0] <= s.accuracy <= s.accuracy_ci[1]
        # RepE's PCA of differences needs pairs that share everything but the concept: on
        # independent examples the top component of the differences is the noise.
        assert (s.accuracy > 0.7) == (m != "pca"), (m, s.accuracy)
    # paired: the same examples with and without the concept, at a strength that varies by
    # pair (centered PCA reads the axis the differences vary along)
    g = np.random.default_rng(9)
    base = xn
    amount = g.uniform(0.5, 4.5, size=(len(base), 1))
    shifted = base + amount * true + 0.1 * g.normal(size=base.shape)
    pu = directions(shifted, base, methods=("pca",))["pca"]
    assert abs(pu @ true) > 0.9
    assert abs(dirs["mean_diff"] @ true) > 0.7  # found the planted axis
    # LEACE's read-out and LDA are both the whitened mean difference
    assert dirs["leace"] @ dirs["lda"] > 0.95
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(len(xp)), np.zeros(len(xn))]
    shuf = rng.permutation(y)
    x = np.concatenate([xp, xn])
    su = directions(x[shuf == 1], x[shuf == 0], methods=("logistic",))["logistic"]
    assert abs(score(su, x[shuf == 1], x[shuf == 0], xt, yt).accuracy - 0.5) < 0.15
    ep, en, (et,) = erase_leace(xp, xn, xt)
    lu = directions(ep, en, methods=("logistic",))["logistic"]
    assert abs(score(lu, ep, en, et, yt).accuracy - 0.5) < 0.12


def test_auroc_interval_brackets_the_point() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40), np.zeros(40)]
    s = rng.normal(size=80) + y
    lo, hi = _auroc_ci(s, y, 0)
    assert lo < roc_auc_score(y, s) < hi and hi - lo < 0.4


def test_auto_train_sizes_stop_at_what_exists() -> None:
    from steerlab.probe.pipeline import ProbeConfig, _sizes

    assert _sizes(ProbeConfig(), 45) == [4, 8, 16, 32, 45]
    assert _sizes(ProbeConfig(), 64) == [4, 8, 16, 32, 64]
    assert _sizes(ProbeConfig(train_sizes=(4, "all")), 10) == [4, 10]
    with pytest.raises(DataError, match="more than the 10"):
        _sizes(ProbeConfig(train_sizes=(4, 64)), 10)


def test_splits(tmp_path: Path) -> None:
    pos = [f"good thing {i}" for i in range(20)]
    neg = [f"bad thing {i}" for i in range(20)]
    d = make_probe_data(pos, neg, seed=3)
    assert d.split["kind"] == "stratified" and len(d.test_pos) == len(d.test_neg) == 6
    # paired sets stay paired: the same indices go to test in both classes
    assert [p.split()[-1] for p in d.test_pos] == [n.split()[-1] for n in d.test_neg]
    assert make_probe_data(pos, neg, seed=3) == d
    b = make_probe_data("builtin:harmful", "builtin:harmless")
    assert b.split["kind"] == "builtin train/test splits" and len(b.train_pos) == 156
    with pytest.raises(DataError, match="need at least 4"):
        make_probe_data(pos[:5], neg[:5])
    with pytest.raises(DataError, match="both --test-positive"):
        make_probe_data(pos, neg, test_positive=pos)


def test_labelled_files(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_text("text,y\n" + "\n".join(f"t{i},{i % 2}" for i in range(12)))
    pos, neg, labels = read_labelled(f, label_column="y")
    assert len(pos) == len(neg) == 6 and labels == {"positive": "1", "negative": "0"}
    f.write_text("text,y\n" + "\n".join(f"t{i},1" for i in range(12)))
    with pytest.raises(DataError, match="only one class"):
        read_labelled(f, label_column="y")
    f.write_text("text,y\n" + "\n".join(f"t{i},{i % 3}" for i in range(12)))
    with pytest.raises(DataError, match="binary"):
        read_labelled(f, label_column="y")
    with pytest.raises(DataError, match="no label column"):
        read_labelled(f, label_column="nope")


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args] + ["-q"])


def _error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for n in needles:
        assert n in lines[0], r.output


def test_cli_probe_contract(tmp_path: Path) -> None:
    out = tmp_path / "p"
    r = _invoke(
        "probe",
        "-m",
        "smollm2-135m",
        "-p",
        "builtin:happy",
        "-n",
        "builtin:sad",
        "--layers",
        "6,18",
        "--draws",
        "2",
        "--train-sizes",
        "4,all",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "probe.json").read_text())
    assert rep["layers"] == [6, 18]
    assert set(rep["methods"]) == {"mean_diff", "pca", "logistic", "lda", "leace"}
    ctl = rep["controls"]
    for per in [*rep["methods"].values(), ctl["shuffled"], ctl["random"]]:
        assert len(per) == 2
        for c in per:
            assert {"accuracy", "accuracy_ci", "auroc"} <= set(c)
    assert len(rep["erasure"]["after_leace"]) == 2
    # the nulls: the default draws per layer, each row a mean over them with its spread and
    # every method's percentile within it
    assert ctl["n_permutations"] == 20 and ctl["n_random_directions"] == 20
    for key in ("shuffled", "random"):
        for row in ctl[key]:
            assert row["draws"] == 20 and len(row["accuracies"]) == 20
            assert row["accuracy"] == pytest.approx(np.mean(row["accuracies"]))
            assert row["accuracy_ci"][0] <= row["accuracy"] <= row["accuracy_ci"][1]
            assert set(row["percentile"]) == set(rep["methods"])
    assert all(len(r["c"]) == 20 for r in ctl["shuffled"])  # each permutation's own C
    assert len(rep["logistic_c_validation"]) == 2
    acc = rep["methods"]["logistic"][1]["accuracy"]
    assert acc > 0.7 and acc > rep["controls"]["shuffled"][1]["accuracy"]
    assert rep["best"]["mean_diff"]["layer"] in (6, 18)
    assert [e["n_per_class"] for e in rep["sample_efficiency"]["pca"]] == [4, 45]
    d = Direction.load(out / "probe_logistic.safetensors")
    assert d.layers == (6, 18) and d.meta["method"] == "logistic"
    assert (out / "report.html").is_file() and (out / "probes.safetensors").is_file()


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--train-sizes", "4,500"], ("--train-sizes 500",)),
        (["--train-sizes", "4,x"], ("--train-sizes",)),
        (["--methods", "mean_diff,magic"], ("--methods",)),
        (["--position", "middle"], ("--position",)),
        (["--layers", "99"], ("out of range",)),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, extra: list, needles: tuple) -> None:
    out = tmp_path / "never"
    _error(
        _invoke("probe", "-p", "builtin:happy", "-n", "builtin:sad", *extra, "--out", out), *needles
    )
    assert not out.exists()


def test_cli_bad_data(tmp_path: Path) -> None:
    out = tmp_path / "never"
    f = tmp_path / "one.csv"
    f.write_text("text,label\n" + "\n".join(f"t{i},1" for i in range(12)))
    _error(_invoke("probe", "--data", f, "--out", out), "only one class")
    _error(_invoke("probe", "--out", out), "give --positive/--negative")
    few = tmp_path / "few.txt"
    few.write_text("a\nb\nc\nd\ne\n")
    _error(_invoke("probe", "-p", few, "-n", few, "--out", out), "need at least 4")
    assert not out.exists()


def test_erasure_in_sample_and_held_out() -> None:
    """In-sample erasure is at chance by construction; held out, an eraser fitted on plenty of
    low-dimensional data removes most of what the same half-train probe reads without it (the
    rest is the estimation error of the class means)."""
    from steerlab.probe.pipeline import ProbeConfig, _Acts, _layer

    xp, xn, tp, tn, _ = _planted(n=400, d=4, gap=3.0)
    tr = _Acts(xp[:, None], xn[:, None])
    te = _Acts(tp[:, None], tn[:, None])
    cfg = ProbeConfig(methods=("mean_diff", "logistic"), permutations=2, random_directions=2)
    res = _layer(tr, te, None, 0, cfg)
    assert res.after_leace.accuracy == pytest.approx(0.5, abs=0.02)
    assert res.held_out_before.accuracy > 0.85
    assert res.held_out_leace.accuracy < 0.65
    assert res.held_out_mean_diff.accuracy < 0.65


def _anisotropic(n: int = 4000, seed: int = 0):
    """Two Gaussian classes with a shared covariance of variances 1 and 25 on the first two
    axes (then 1), and means differing by (1, 1, 0, ...)."""
    rng = np.random.default_rng(seed)
    d = 6
    scale = np.ones(d)
    scale[1] = 5.0
    md = np.zeros(d)
    md[:2] = 1.0
    xp = rng.normal(size=(n, d)) * scale + md
    xn = rng.normal(size=(n, d)) * scale
    return xp, xn, md


def test_leace_reads_the_whitened_mean_difference() -> None:
    """The eraser's proj_left is parallel to the mean difference (the old read-out, so cosine
    1 with mean_diff was an identity); its read-out proj_right is Sigma^{-1} (mu_pos - mu_neg),
    which here points elsewhere: closed form and scikit-learn's LDA as oracles."""
    import torch
    from concept_erasure import LeaceFitter
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from steerlab.probe.fit import leace_readout

    xp, xn, md = _anisotropic()
    x = np.concatenate([xp, xn])
    y = np.r_[np.ones(len(xp)), np.zeros(len(xn))]

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    f = LeaceFitter(x.shape[1], 1, dtype=torch.float64)
    f.update(torch.from_numpy(x), torch.from_numpy(y[:, None]))
    old = f.eraser.proj_left[:, 0].numpy()
    emp_md = xp.mean(0) - xn.mean(0)
    assert abs(cos(old, emp_md)) > 0.9999  # the identity the issue names
    r = leace_readout(x, y)
    closed = np.linalg.solve(np.cov(x.T), emp_md)  # Sigma^{-1} mean difference
    assert abs(cos(r, closed)) > 0.999
    lda = LinearDiscriminantAnalysis(solver="lsqr").fit(x, y).coef_[0]
    assert abs(cos(r, lda)) > 0.999
    # the truth: Sigma_within^{-1} md = (1, 1/25, 0, ...), cosine ~0.73 with md
    assert abs(cos(r, md)) < 0.8 and abs(cos(r, np.array([1, 0.04, 0, 0, 0, 0]))) > 0.99
    u = directions(xp, xn, methods=("leace", "mean_diff"))
    assert u["leace"] @ u["mean_diff"] < 0.8 and u["leace"] @ emp_md > 0  # signed on train
    assert abs(abs(cos(u["leace"], r)) - 1) < 1e-9


def test_pca_centers_the_pair_differences() -> None:
    """Centered PCA of pos - neg differences equals scikit-learn's PCA (which centers) on them.
    A constant shift is removed by the centering (the uncentered SVD found it: the collapse
    onto mean_diff); a shift whose size varies by pair is the axis of largest variance."""
    from sklearn.decomposition import PCA

    from steerlab.probe.fit import pca_direction

    rng = np.random.default_rng(1)
    n, d = 300, 8
    e0, e1 = np.eye(d)[0], np.eye(d)[1]
    xn = rng.normal(size=(n, d))
    noise = rng.normal(size=(n, d)) * np.r_[0.3, 3.0, np.full(d - 2, 0.3)]
    xp = xn + 5.0 * e0 + noise  # constant concept shift, big noise along e1
    u = pca_direction(xp, xn)
    oracle = PCA(n_components=1).fit(xp - xn).components_[0]
    assert abs(u @ oracle) > 0.9999
    assert abs(u @ e1) > 0.95 and abs(u @ e0) < 0.2
    uncentered = np.linalg.svd(xp - xn, full_matrices=False)[2][0]
    assert abs(uncentered @ e0) > 0.9  # what the old reader returned
    xp2 = xn + rng.uniform(1, 9, size=(n, 1)) * e0 + 0.3 * rng.normal(size=(n, d))
    assert abs(pca_direction(xp2, xn) @ e0) > 0.95


def test_null_summary_percentile_and_p_value() -> None:
    from steerlab.probe.fit import Scored
    from steerlab.probe.nulls import empirical_percentile, permutation_p_value, summarize_null

    null = [0.4, 0.5, 0.6, 0.7]
    assert empirical_percentile(0.5, null) == pytest.approx(37.5)  # 1 below, 1 tie
    assert empirical_percentile(0.9, null) == 100.0
    assert permutation_p_value(0.5, null) == pytest.approx(4 / 5)
    assert permutation_p_value(0.9, null) == pytest.approx(1 / 5)  # never 0
    draws = [Scored(a, (a, a), 1 - a, (1 - a, 1 - a)) for a in null]
    s = summarize_null(draws, {"m": 0.65}, c=[1, 1, 0.1, 10])
    assert s.accuracy == pytest.approx(0.55) and s.auroc == pytest.approx(0.45)
    assert s.accuracy_sd == pytest.approx(np.std(null, ddof=1))
    assert s.accuracy_ci == pytest.approx(tuple(np.percentile(null, [2.5, 97.5])))
    assert s.accuracy_5_95 == pytest.approx(tuple(np.percentile(null, [5, 95])))
    assert s.percentile["m"] == 75.0 and s.draws == 4
    d = s.to_dict()
    assert d["draws"] == 4 and d["c"] == [1, 1, 0.1, 10] and d["accuracies"] == null


def test_permutations_refit_c_on_train_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each permutation chooses its own C by cross-validation on the permuted train labels
    (never on test); the validation fit chooses its C on its fitting part only."""
    import steerlab.probe.nulls as nulls
    import steerlab.probe.pipeline as pipeline
    from steerlab.probe.fit import choose_c
    from steerlab.probe.pipeline import ProbeConfig, _Acts, _layer

    xp, xn, tp, tn, _ = _planted(n=40, d=6)
    x = np.concatenate([xp, xn])
    y = np.r_[np.ones(40), np.zeros(40)]
    calls: list[tuple[np.ndarray, np.ndarray]] = []

    def spy(xx: np.ndarray, yy: np.ndarray, seed: int = 0) -> float:
        calls.append((xx.copy(), yy.copy()))
        return choose_c(xx, yy, seed)

    monkeypatch.setattr(nulls, "choose_c", spy)
    xt = np.concatenate([tp, tn])
    yt = np.r_[np.ones(40), np.zeros(40)]
    scores, cs = nulls.permutation_null(x, y, xt, yt, n=21, seed=0)
    assert len(scores) == len(cs) == len(calls) == 21
    labels = {tuple(yy) for _, yy in calls}
    assert len(labels) == 21 and tuple(y) not in labels  # 21 distinct permutations
    for xx, yy in calls:
        assert np.array_equal(xx, x) and yy.sum() == 40  # train rows only, labels permuted
    assert cs == [choose_c(x, yy, k) for k, (_, yy) in enumerate(calls)]
    # through the pipeline: the configured count, and the validation C on the fitting part
    calls.clear()
    shapes: list[int] = []
    monkeypatch.setattr(pipeline, "choose_c", lambda xx, yy, seed=0: shapes.append(len(xx)) or 1.0)
    cfg = ProbeConfig(methods=("mean_diff", "logistic"), permutations=3, random_directions=4)
    res = _layer(_Acts(xp[:, None], xn[:, None]), _Acts(tp[:, None], tn[:, None]), None, 0, cfg)
    assert len(calls) == 3 and res.shuffled.draws == 3 and len(res.shuffled.c or ()) == 3
    assert res.random.draws == 4
    assert shapes == [80, 80 - 2 * round(40 * cfg.val_fraction)]  # all train; the fitting part


def test_random_directions_signed_on_train() -> None:
    from steerlab.probe.nulls import random_direction_null, random_units_signed

    xp, xn, tp, tn, _ = _planted(n=200, d=12, gap=4.0)
    md = xp.mean(0) - xn.mean(0)
    units = random_units_signed(12, 25, md, seed=3)
    assert units.shape == (25, 12)
    assert np.allclose(np.linalg.norm(units, axis=1), 1.0) and (units @ md > 0).all()
    assert len({tuple(np.round(u, 6)) for u in units}) == 25
    xt, yt = np.concatenate([tp, tn]), np.r_[np.ones(200), np.zeros(200)]
    null = random_direction_null(xp, xn, xt, yt, n=25, seed=3)
    accs = np.array([s.accuracy for s in null])
    # a strong concept leaks into random projections once each is signed on train: every
    # draw is at or above chance, and the mean clearly above; the real direction beats them
    assert len(null) == 25 and (accs > 0.42).all() and accs.mean() > 0.55
    u = directions(xp, xn, methods=("mean_diff",))["mean_diff"]
    assert score(u, xp, xn, xt, yt).accuracy > accs.max()


def test_validation_keeps_pairs_together() -> None:
    """Paired sets (equal sizes) put both members of a pair on the same side of the validation
    split: with one member fitted and its partner validated, a probe that tells items apart
    (and nothing else) scores far below chance on validation (0.2 here before the fix)."""
    from steerlab.probe.pipeline import ProbeConfig, _validation

    rng = np.random.default_rng(0)
    n, d = 100, 30
    item = rng.normal(size=(n, d)) * 3  # what the two members of a pair share
    xp = item + 0.3 * rng.normal(size=(n, d))
    xn = item + 0.3 * rng.normal(size=(n, d))  # no concept at all
    val, _ = _validation(xp, xn, ProbeConfig(methods=("mean_diff", "logistic", "lda")))
    assert all(0.35 < v < 0.65 for v in val.values()), val
