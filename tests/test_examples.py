"""The scripts in ``examples/`` run as written (the docs include them from the files).

Each runs in this process, as ``python examples/NAME.py OUT`` would, on the built-in
smollm2-135m. The quick one is in the default suite; the pipelines (a sweep, a probe, the
refusal ablation with its generations) take minutes on a 2-core CPU and are marked slow
(``bash scripts/test.sh -m slow``).
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_every_example_is_tested() -> None:
    tested = {"extract_steer_save.py", "refusal_ablation.py", "custom_behavior_sweep.py"}
    tested |= {"read_probe.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_extract_steer_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    run_example("extract_steer_save.py", str(tmp_path), monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "direction: layers (14, 15, 16), width 576" in out
    assert "unsteered:" in out and "steered:" in out
    from safetensors import safe_open

    with safe_open(str(tmp_path / "happy.safetensors"), framework="pt") as f:
        meta = json.dumps(f.metadata())
    assert "mean_diff" in meta and "smollm2-135m" in meta  # the artifact describes itself


@pytest.mark.slow
def test_refusal_ablation(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    run_example("refusal_ablation.py", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "refused, direction ablated:" in out and "max |logit diff|" in out


@pytest.mark.slow
def test_custom_behavior_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    run_example("custom_behavior_sweep.py", str(tmp_path), monkeypatch=monkeypatch)
    report = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert report["behavior"]["name"] == "cheerful"
    assert report["behavior"]["counts"]["selection"] == 8
    assert report["chosen"]["layer"] in (10, 13)
    assert (tmp_path / "sweep" / "report.html").is_file()
    assert "test unsteered" in capsys.readouterr().out


@pytest.mark.slow
def test_read_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    run_example("read_probe.py", str(tmp_path), monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "mean_diff" in out and "logistic" in out and "shuffled labels" in out
