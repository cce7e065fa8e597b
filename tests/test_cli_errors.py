"""Every bad command line ends the same way: exit code 2, one line starting with ``error:``, no
traceback, nothing written. Ctrl-C ends with exit code 130 and says how to resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerlab._version import __version__
from steerlab.cli import app

POS = ["i am so happy today", "what a joyful day", "life is great", "you look great"]
NEG = ["i am so sad today", "what a miserable day", "life is awful", "you look awful"]


@pytest.fixture
def sets(tmp_path: Path) -> tuple[Path, Path]:
    p, n = tmp_path / "pos.txt", tmp_path / "neg.txt"
    p.write_text("\n".join(POS))
    n.write_text("\n".join(NEG))
    return p, n


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(r, *needles: str) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error:"), r.output
    for n in needles:
        assert n in lines[0], r.output
    return lines[0]


def _written(root: Path, before: set[Path]) -> set[Path]:
    return set(root.rglob("*")) - before


# ------------------------------------------------------------------------------ extract


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--site", "bogus"], ["--site", "bogus"]),
        (["--position", "bogus"], ["--position", "bogus"]),
        (["--layers", "abc"], ["cannot parse layers"]),
        (["--layers", "40"], ["out of range"]),
    ],
)
def test_extract_bad_options(
    tiny_dir: Path, sets: tuple[Path, Path], tmp_path: Path, extra: list[str], needles: list[str]
) -> None:
    out = tmp_path / "out" / "v.safetensors"
    before = set(tmp_path.rglob("*"))
    r = _invoke(
        "extract", "--model", tiny_dir, "-p", sets[0], "-n", sets[1], "-o", out, "-q", *extra
    )
    _one_error_line(r, *needles)
    assert _written(tmp_path, before) == set()


def test_extract_backwards_layer_range_says_empty(
    tiny_dir: Path, sets: tuple[Path, Path], tmp_path: Path
) -> None:
    # Defect: "5:2" was reported as "outside 0..4", which sends the user looking for the
    # wrong mistake; it is a backwards (empty) range.
    out = tmp_path / "v.safetensors"
    for spec in ("5:2", "2:2", "-1:1"):
        r = _invoke(
            "extract", "--model", tiny_dir, "-p", sets[0], "-n", sets[1], "-o", out, "-q",
            "--layers", spec,
        )  # fmt: skip
        line = _one_error_line(r, "empty", repr(spec))
        assert "outside" not in line
    assert not out.exists()


def test_resolve_layers_messages() -> None:
    from steerlab.capture import resolve_layers
    from steerlab.errors import LayerError

    assert resolve_layers("1:3", 4) == [1, 2]
    assert resolve_layers("-2:", 4) == [2, 3]
    with pytest.raises(LayerError, match=r"layer range '5:2' is empty: the end must come after"):
        resolve_layers("5:2", 4)
    with pytest.raises(LayerError, match=r"outside 0\.\.4"):
        resolve_layers("2:9", 4)
    with pytest.raises(LayerError, match=r"out of range: the model has layers 0\.\.3"):
        resolve_layers("7", 4)


# ------------------------------------------------------------------------------ refusal


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--positions", "-1"], "--positions"),
        (["--screen", "bogus"], "--screen"),
        (["--on-empty", "bogus"], "--on-empty"),
        (["--filter-rule", "bogus"], "--filter-rule"),
        (["--kl-max", "nan"], "--kl-max"),
        (["--kl-max", "0"], "--kl-max"),
        (["--prune-last", "1.5"], "--prune-last"),
        (["--coeff", "lots"], "--coeff"),
        (["--template", "missing.jinja"], "--template"),
    ],
)
def test_refusal_bad_options_name_the_flag(
    tiny_dir: Path, tmp_path: Path, extra: list[str], flag: str
) -> None:
    extra = [str(tmp_path / x) if x.endswith(".jinja") else x for x in extra]
    out = tmp_path / "run"
    before = set(tmp_path.rglob("*"))
    r = _invoke("refusal", "--model", tiny_dir, "--out", out, "-q", *extra)
    line = _one_error_line(r, flag)
    # The config's field name is translated to the flag the user typed.
    assert flag.lstrip("-").replace("-", "_") not in line.replace(flag, "")
    assert not out.exists()
    assert _written(tmp_path, before) == set()


# ------------------------------------------------------------------------------ shared options


def _command_line(cmd: str, tiny_dir: Path, sets: tuple[Path, Path], tmp_path: Path) -> list:
    return {
        "extract": ["extract", "-p", sets[0], "-n", sets[1], "-o", tmp_path / "v.safetensors"],
        "generate": ["generate", "--prompt", "what a day", "--max-new-tokens", "2"],
        "refusal": ["refusal", "--out", tmp_path / "run"],
        "discover": ["discover", "--prompt", "what a day", "--out", tmp_path / "disc"],
        "organism": ["organism", "backdoor", "--out", tmp_path / "org"],
    }[cmd] + ["--model", tiny_dir, "-q"]


COMMANDS = ["extract", "generate", "refusal", "discover", "organism"]


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--adapter", "{bad json"], ["--adapter", "not valid JSON"]),
        (["--adapter", "[1]"], ["--adapter", "JSON object"]),
        (["--dtype", "float8"], ["--dtype", "float8"]),
    ],
)
def test_shared_model_options(
    cmd: str,
    extra: list[str],
    needles: list[str],
    tiny_dir: Path,
    sets: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    before = set(tmp_path.rglob("*"))
    r = _invoke(*_command_line(cmd, tiny_dir, sets, tmp_path), *extra)
    _one_error_line(r, *needles)
    assert _written(tmp_path, before) == set()


# ------------------------------------------------------------------------------ generate


def test_generate_bad_inputs(tiny_dir: Path, tmp_path: Path) -> None:
    gen = ["generate", "--model", tiny_dir, "--max-new-tokens", "2", "-q"]
    before = set(tmp_path.rglob("*"))
    _one_error_line(_invoke(*gen), "--prompt")
    # Defect: a NaN coefficient used to reach the model (NaN text, or a traceback).
    _one_error_line(_invoke(*gen, "--prompt", "what a day", "--coeff", "nan"), "--coeff", "nan")
    _one_error_line(_invoke(*gen, "--prompt", "what a day", "--coeff", "inf"), "--coeff")
    _one_error_line(
        _invoke(*gen, "--prompt", "what a day", "--clamp", tmp_path / "x.safetensors"),
        "--clamp needs --value",
    )
    _one_error_line(_invoke(*gen, "--prompt", "what a day", "--positions", "some"), "--positions")
    assert _written(tmp_path, before) == set()


# ------------------------------------------------------------------------------ Ctrl-C, version


@pytest.mark.parametrize("cmd", ["extract", "generate", "refusal"])
def test_ctrl_c_exits_130_and_says_how_to_resume(
    cmd: str,
    tiny_dir: Path,
    sets: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import steerlab.models.load as load

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(load, "load_model", interrupted)
    r = _invoke(*_command_line(cmd, tiny_dir, sets, tmp_path))
    assert r.exit_code == 130, r.output
    assert "Traceback" not in r.output
    # Only the commands that keep a run cache promise to resume.
    if cmd == "refusal":
        assert "interrupted: rerun the same command to resume" in r.output
    else:
        assert r.output.strip() == "error: interrupted"


def test_ctrl_c_inside_the_pipeline(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import steerlab.refusal as refusal

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(refusal, "run_refusal", interrupted)
    r = _invoke("refusal", "--model", tiny_dir, "--out", tmp_path / "run", "-q")
    assert r.exit_code == 130, r.output
    assert r.output.strip() == "error: interrupted: rerun the same command to resume"


def test_version() -> None:
    r = _invoke("--version")
    assert r.exit_code == 0
    assert r.output.strip() == f"steerlab {__version__}"
