"""CLI: the happy path on a tiny local model, and every bad input as one line + exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.directions import Direction

runner = CliRunner()

POS = ["i am so happy today", "what a joyful day", "life is great", "you look great"]
NEG = ["i am so sad today", "what a miserable day", "life is awful", "you look awful"]


@pytest.fixture
def sets(tmp_path: Path) -> tuple[Path, Path]:
    p, n = tmp_path / "pos.json", tmp_path / "neg.txt"
    p.write_text(json.dumps([{"instruction": x} for x in POS]))
    n.write_text("\n".join(NEG))
    return p, n


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_extract_then_generate(tiny_dir: Path, sets: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "v.safetensors"
    r = _invoke(
        "extract",
        "--model",
        tiny_dir,
        "-p",
        sets[0],
        "-n",
        sets[1],
        "-o",
        out,
        "--layers",
        "1:3",
        "--method",
        "logistic",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    d = Direction.load(out)
    assert d.layers == (1, 2) and d.meta["method"] == "logistic"
    r = _invoke(
        "generate",
        "--model",
        tiny_dir,
        "--prompt",
        "tell me about your day",
        "--vector",
        out,
        "--layer",
        "2",
        "--coeff",
        "8",
        "--compare",
        "--json",
        "--max-new-tokens",
        "4",
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows[0]["prompt"] == "tell me about your day"
    assert {"unsteered", "steered"} <= rows[0].keys()
    r = _invoke(
        "generate",
        "--model",
        tiny_dir,
        "--prompt",
        "what a day",
        "--ablate",
        out,
        "--layer",
        "1",
        "--clamp",
        out,
        "--value",
        "2.0",
        "--json",
        "--max-new-tokens",
        "3",
    )
    assert r.exit_code == 0, r.output
    assert "steered" in json.loads(r.stdout)[0]


def test_models_json() -> None:
    r = _invoke("models", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.stdout)
    assert {x["name"] for x in rows} == {"smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"}
    assert all({"installed", "cached"} <= x.keys() for x in rows)


def _expect_error(r, pattern: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert pattern in r.output


def test_bad_inputs_exit_2_and_write_nothing(
    tiny_dir: Path, sets: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "never.safetensors"
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    base = ["extract", "--model", tiny_dir, "-o", out, "--quiet"]
    _expect_error(_invoke(*base, "-p", empty, "-n", sets[1]), "no prompts")
    big = tmp_path / "big.txt"
    big.write_text("\n".join(POS * 5))
    short = tmp_path / "short.txt"
    short.write_text("\n".join(NEG[:2]))
    _expect_error(_invoke(*base, "-p", big, "-n", short), "unbalanced")
    _expect_error(_invoke(*base, "-p", sets[0], "-n", sets[1], "--layers", "40"), "out of range")
    _expect_error(
        _invoke(*base, "-p", sets[0], "-n", sets[1], "--method", "magic"), "unknown --method"
    )
    _expect_error(_invoke(*base, "-p", tmp_path / "nope.json", "-n", sets[1]), "not found")
    _expect_error(
        _invoke("extract", "--model", "no-such-model", "-o", out, "-p", sets[0], "-n", sets[1]),
        "unknown model",
    )
    assert not out.exists()
    assert not list(tmp_path.glob(".never*"))


def test_bad_artifacts_exit_2(tiny_dir: Path, tmp_path: Path) -> None:
    gen = ["generate", "--model", tiny_dir, "--prompt", "what a day", "--max-new-tokens", "2"]
    wide = Direction(torch.ones(1, 64), (1,), {}).save(tmp_path / "wide.safetensors")
    _expect_error(_invoke(*gen, "--vector", wide), "width")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"garbage" * 10)
    _expect_error(_invoke(*gen, "--vector", corrupt), "corrupt")
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.ones(3)}, str(foreign))
    _expect_error(_invoke(*gen, "--ablate", foreign), "not a steerlab")
    # A NaN vector cannot even be saved through the API; write one by hand.
    nan = tmp_path / "nan.safetensors"
    save_file(
        {"vectors": torch.full((1, 32), float("nan")), "layers": torch.tensor([1])},
        str(nan),
        metadata={"steerlab": json.dumps({"kind": "steerlab.direction"})},
    )
    _expect_error(_invoke(*gen, "--vector", nan), "NaN")
    ok = Direction(torch.ones(1, 32), (1,), {}).save(tmp_path / "ok.safetensors")
    _expect_error(_invoke(*gen, "--vector", ok, "--layer", "99"), "out of range")
    _expect_error(_invoke(*gen, "--clamp", ok), "--value")
