"""``steerlab sweep`` end to end on the built-in model (a tiny grid), its contract, resume, and
every bad input: one line, exit code 2, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import EVAL_PROMPTS as PROMPTS
from typer.testing import CliRunner

from steerlab.behaviors.behavior import load_behavior
from steerlab.cli import app
from steerlab.directions.artifact import Direction
from steerlab.evaluate import measure as measure_mod
from steerlab.models.load import LoadedModel, load_model
from steerlab.runs import _finite
from steerlab.sweep.config import SweepConfig
from steerlab.sweep.pipeline import run_sweep
from steerlab.sweep.result import SweepReport

SMALL = ["--layers", "10,16", "--coeffs", "0.25,1", "--max-new-tokens", "6"]


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return load_model("smollm2-135m")


@pytest.fixture
def beh_file(tmp_path: Path) -> Path:
    data = {
        "name": "tiny-sentiment",
        "scorer": "sentiment",
        "description": "Be cheerful.",
        "eval_prompts": PROMPTS,
        "positive": "builtin:happy",
        "negative": "builtin:sad",
    }
    p = tmp_path / "beh.json"
    p.write_text(json.dumps(data))
    return p


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args] + ["-q"])


def _strip(rep: dict | SweepReport) -> dict:
    d = rep.to_dict() if isinstance(rep, SweepReport) else rep
    return {k: v for k, v in d.items() if k not in ("timings", "cost")}


# sweep.json's key order, a contract with the scripts that read it
TEST_KEYS = {
    "steered": ["score", "ci", "ce", "n", "distinct2", "longest_repeat", "kl"],
    "random": [
        "score", "ci", "ci_kind", "mean_ci", "ce", "n", "distinct2", "longest_repeat", "kl",
        "n_directions", "null_scores", "percentile", "p_direction",
    ],
    "paired": ["diff", "ci", "p", "n", "p_holm"],
}  # fmt: skip
TOP_KEYS = [
    "kind", "steerlab_version", "model", "provenance", "behavior", "scorer", "config",
    "direction", "layers", "norms", "unsteered_selection", "cells", "search", "chosen", "test",
    "verdict", "examples", "per_prompt", "cost", "timings",
]  # fmt: skip


def test_cli_sweep_contract_and_rerun(tmp_path: Path, beh_file: Path) -> None:
    out = tmp_path / "run"
    r = _invoke("sweep", "-m", "smollm2-135m", "-b", beh_file, *SMALL, "--out", out)
    assert r.exit_code == 0, r.output
    text = (out / "sweep.json").read_text()
    rep = json.loads(text)
    assert json.dumps(SweepReport.from_dict(rep).to_dict(), indent=2) == text  # reads back
    assert list(rep["test"]) == ["steered", "unsteered", "random", "paired"]
    assert list(rep["test"]["steered"]) == list(rep["test"]["unsteered"]) == TEST_KEYS["steered"]
    assert list(rep["test"]["random"]) == TEST_KEYS["random"]
    assert list(rep["test"]["paired"]) == ["vs_unsteered", "vs_null_mean"]
    assert all(list(c) == TEST_KEYS["paired"] for c in rep["test"]["paired"].values())
    assert list(rep["chosen"]) == [
        "layer", "coeff", "positions", "key", "rule", "within_bound", "selection"
    ]  # fmt: skip
    assert list(rep["verdict"]) == [
        "steered_beats_unsteered", "steered_moves_score", "beyond_random_null",
        "random_inside_unsteered", "text",
    ]  # fmt: skip
    assert [k for k in rep if k != "maps"] == TOP_KEYS  # maps, when asked for, after per_prompt
    assert set(rep["chosen"]) >= {"layer", "coeff", "positions", "rule"}
    assert rep["chosen"]["layer"] in (10, 16) and rep["chosen"]["coeff"] in (0.25, 1.0)
    for name in ("steered", "unsteered", "random"):
        t = rep["test"][name]
        per = 20 if name == "random" else 1  # the null pools 20 directions over 8 prompts
        assert set(t) >= {"score", "ci", "ce", "n"} and t["n"] == 8 * per
        assert t["ci"][0] <= t["score"] <= t["ci"][1]
    null = rep["test"]["random"]
    assert null["n_directions"] == 20 and len(null["null_scores"]) == 20  # the default null
    assert len(set(null["null_scores"])) > 1  # different directions, different scores
    assert 0.0 <= null["percentile"] <= 100.0
    for k in ("vs_unsteered", "vs_null_mean"):
        c = rep["test"]["paired"][k]
        assert {"diff", "ci", "p", "p_holm"} <= set(c) and c["p"] <= c["p_holm"] <= 1.0
    steered = rep["per_prompt"]["steered"]
    gap = sum(steered) / len(steered) - sum(rep["per_prompt"]["unsteered"]) / len(steered)
    assert rep["test"]["paired"]["vs_unsteered"]["diff"] == pytest.approx(gap)
    assert len(rep["cells"]) == 4
    for c in rep["cells"]:
        assert {"layer", "coeff", "positions", "score", "ce", "ce_increase", "kl", "n"} <= set(c)
    # the strongest push costs more fluency than the weakest at the same layer
    by = {(c["layer"], c["coeff"]): c for c in rep["cells"]}
    assert by[(16, 1.0)]["ce"] > by[(16, 0.25)]["ce"]
    assert (out / "report.html").is_file() and (out / "direction.safetensors").is_file()
    again = _invoke("sweep", "-m", "smollm2-135m", "-b", beh_file, *SMALL, "--out", out)
    assert again.exit_code == 0, again.output
    rep2 = json.loads((out / "sweep.json").read_text())
    assert _strip(rep2) == _strip(rep)
    assert rep2["cost"]["rows_generated"] == 0  # everything came from the run's cache


def test_interrupted_sweep_resumes_identically(
    tmp_path: Path, beh_file: Path, lm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    beh = load_behavior(beh_file)
    cfg = SweepConfig(
        layers="10,16", coeffs=(0.25, 1.0), max_new_tokens=5, batch_rows=8, random_directions=2
    )  # the default null's 20 directions: test_cli_sweep_contract_and_rerun
    clean = run_sweep(lm, beh, cfg, tmp_path / "clean")
    text = (tmp_path / "clean" / "sweep.json").read_text()
    assert text == json.dumps(_finite(clean.to_dict()), indent=2, allow_nan=False)
    real = measure_mod.Measurer.measure
    calls = {"n": 0}

    def flaky(self, *a, **k):  # the third chunk is interrupted
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(measure_mod.Measurer, "measure", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(lm, beh, cfg, tmp_path / "resumed")
    monkeypatch.setattr(measure_mod.Measurer, "measure", real)
    resumed = run_sweep(lm, beh, cfg, tmp_path / "resumed")
    assert resumed.timings["resumed_steps"]
    assert _strip(resumed) == _strip(clean)


def _error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for n in needles:
        assert n in lines[0], r.output


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--coeffs", ""], ("--coeffs", "empty")),
        (["--coeffs", "nan,1"], ("--coeffs", "finite")),
        (["--coeffs", "0.5,inf"], ("--coeffs", "finite")),
        (["--positions", "middle"], ("--positions",)),
        (["--search", "random"], ("--search",)),
        (["--pairs", "1"], ("--pairs",)),
        (["--layers", "40:44"], ("layer range", "outside")),
        (["--layers", "99"], ("out of range",)),
    ],
)
def test_bad_grid_arguments(tmp_path: Path, beh_file: Path, extra: list, needles: tuple) -> None:
    out = tmp_path / "never"
    _error(_invoke("sweep", "-m", "smollm2-135m", "-b", beh_file, *extra, "--out", out), *needles)
    assert not out.exists()


def test_bad_behaviors_and_vectors(
    tmp_path: Path, beh_file: Path, lm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "never"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "eval_prompts": PROMPTS}))
    _error(_invoke("sweep", "-b", bad, "--out", out), "missing field(s) scorer, positive, negative")
    small = tmp_path / "small.json"
    small.write_text(json.dumps({**json.loads(beh_file.read_text()), "eval_prompts": PROMPTS[:10]}))
    _error(_invoke("sweep", "-b", small, "--out", out), "need at least 8")
    # a vector from another model: another width, then the same width and another architecture
    other = tmp_path / "other.safetensors"
    Direction(torch.ones(1, 64), (3,), {"model": {"model_id": "x"}}).save(other)
    _error(_invoke("sweep", "-b", beh_file, "--vector", other, "--out", out), "width 64")
    same = tmp_path / "same.safetensors"
    meta = {"model": {"model_id": "another", "config_hash": "0123abcd"}}
    Direction(torch.ones(1, lm.info.d_model), (3,), meta).save(same)
    _error(_invoke("sweep", "-b", beh_file, "--vector", same, "--out", out), "was made for")
    # a scorer whose library is missing
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    _error(_invoke("sweep", "-b", beh_file, "--out", out), "vaderSentiment")
    assert not out.exists()


def test_given_vector_must_cover_the_layers(
    tmp_path: Path, beh_file: Path, lm: LoadedModel
) -> None:
    v = tmp_path / "v.safetensors"
    Direction(torch.randn(2, lm.info.d_model), (10, 11), {"model": lm.info.to_dict()}).save(v)
    out = tmp_path / "never"
    _error(
        _invoke("sweep", "-b", beh_file, "--vector", v, "--layers", "10:13", "--out", out),
        "no row for layer(s) [12]",
    )
    assert not out.exists()


NOUNS = [
    "bus",
    "table",
    "pencil",
    "bridge",
    "window",
    "chair",
    "spoon",
    "lamp",
    "door",
    "clock",
    "shelf",
    "river",
    "road",
    "cup",
    "box",
    "fence",
    "kettle",
    "ladder",
    "rug",
    "bench",
    "coat",
    "wheel",
    "bottle",
    "towel",
    "mirror",
    "stair",
    "basket",
    "plate",
    "hammer",
    "blanket",
    "bucket",
    "curtain",
]


def test_successive_halving_and_maps(tmp_path: Path, lm: LoadedModel) -> None:
    from steerlab.behaviors.behavior import behavior_from_dict

    beh = behavior_from_dict(
        {
            "name": "s",
            "scorer": "sentiment",
            "positive": "builtin:happy",
            "negative": "builtin:sad",
            "eval_prompts": [f"Describe a {n}." for n in NOUNS],
        }
    )
    cfg = SweepConfig(
        layers="10,16",
        coeffs=(0.25, 1.0),
        max_new_tokens=5,
        search="auto",
        pairs=2,
        necessity_prompts=6,
        random_directions=2,
    )
    rep = run_sweep(lm, beh, cfg, tmp_path / "auto")
    rounds = rep.search["rounds"]
    assert rounds[0] == {"cells": 4, "prompts": 8} and rounds[-1] == {"cells": 2, "prompts": 16}
    full = [c for c in rep.cells if c["prompts"] == 16]
    assert len(full) == 2 and rep.chosen.key in {c["key"] for c in full}
    assert rep.maps is not None
    assert list(rep.to_dict())[-4:] == ["per_prompt", "maps", "cost", "timings"]
    pairs = rep.maps["pairs"]
    assert pairs["layers"] == [10, 16] and pairs["coeff_each"] == rep.chosen.coeff / 2
    inter = pairs["interaction"][0][1]
    e = pairs["pair_effect"][0][1]
    assert abs(inter - (e - sum(pairs["single_effect"]))) < 1e-9
    prof = rep.maps["profile"]
    assert prof["layers"] == [10, 16] and len(prof["sufficiency"]) == 2
    assert prof["necessity"] is None or len(prof["necessity"]) == 2


def test_likelihood_scorers(lm: LoadedModel) -> None:
    from steerlab.behaviors.behavior import behavior_from_dict
    from steerlab.behaviors.scorers import make_scorer
    from steerlab.evaluate.measure import Measurer
    from steerlab.interventions import NoOp, Steer

    ab = load_behavior("builtin:sycophancy-ab")
    m = Measurer(lm, ab, make_scorer("ab"), max_new_tokens=3)
    items = ab.items("selection")[:8]
    v = torch.randn(lm.info.d_model)
    rows = [NoOp(), Steer(v / v.norm() * 300.0, layers=12)]
    res = m.measure(rows, ab.prompts("selection")[:2], items=items, kl=False)
    base, pushed = res[0]["score"], res[1]["score"]
    assert len(base) == 8 and all(0.0 <= s <= 1.0 for s in base + pushed)
    assert base != pushed  # the push reaches the letter's probability
    pairs = [
        {
            "prompt": f"Describe a {n}.",
            "positive": f"A {n} is lovely!",
            "negative": f"A {n} is awful.",
        }
        for n in NOUNS[:24]
    ]
    mb = behavior_from_dict(
        {
            "name": "m",
            "scorer": "margin",
            "eval_prompts": NOUNS[:16],
            "positive": None,
            "negative": None,
            "pairs": pairs,
        }
    )
    mm = Measurer(lm, mb, make_scorer("margin"), max_new_tokens=2)
    got = mm.measure([NoOp()], mb.prompts("selection")[:1], items=mb.items("selection"), kl=False)[
        0
    ]["score"]
    assert len(got) == 6 and all(0.0 < s < 1.0 for s in got)


def test_given_single_layer_vector_is_swept(
    tmp_path: Path, beh_file: Path, lm: LoadedModel
) -> None:
    v = tmp_path / "v.safetensors"
    meta = {"model": lm.info.to_dict(), "method": "mean_diff"}
    Direction(torch.randn(1, lm.info.d_model), (12,), meta).save(v)
    out = tmp_path / "given"
    r = _invoke(
        "sweep",
        "-b",
        beh_file,
        "--vector",
        v,
        "--layers",
        "10,14",
        "--coeffs",
        "0.5",
        "--positions",
        "generated",
        "--max-new-tokens",
        "4",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "sweep.json").read_text())
    assert rep["direction"]["kind"] == "given" and len(rep["cells"]) == 2
    assert all(c["kl"] == 0.0 for c in rep["cells"])  # generated-only steering: prompts untouched
    assert not (out / "direction.safetensors").exists()  # nothing extracted
