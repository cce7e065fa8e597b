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
    base = xn  # paired: the same examples with and without the concept
    pu = directions(
        base + 2.5 * true + 0.1 * np.random.default_rng(9).normal(size=base.shape),
        base,
        methods=("pca",),
    )["pca"]
    assert abs(pu @ true) > 0.9
    assert abs(dirs["mean_diff"] @ true) > 0.7  # found the planted axis
    # the direction LEACE erases is the difference in means (one binary concept)
    assert abs(dirs["leace"] @ dirs["mean_diff"]) > 0.999
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
    res = _layer(tr, te, None, 0, ProbeConfig(methods=("mean_diff", "logistic")))
    assert res["after_leace"].accuracy == pytest.approx(0.5, abs=0.02)
    assert res["held_out_before"].accuracy > 0.85
    assert res["held_out_leace"].accuracy < 0.65
    assert res["held_out_mean_diff"].accuracy < 0.65
