"""The sweep issue's criterion on the built-in model (slow: ~15 minutes on 2 CPU cores).

``steerlab sweep --behavior builtin:sentiment`` on smollm2-135m picks a cell on the selection
split whose test score beats the unsteered model with separated 95% intervals.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerlab.cli import app

pytestmark = pytest.mark.slow


def test_sentiment_is_steerable_on_the_test_split(tmp_path: Path) -> None:
    out = tmp_path / "sentiment"
    args = [
        "sweep",
        "-m",
        "smollm2-135m",
        "-b",
        "builtin:sentiment",
        "--layers",
        "4,7,10,13,16,19,22,25",
        "--out",
        str(out),
        "-q",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "sweep.json").read_text())
    assert rep["chosen"]["within_bound"]
    s, u = rep["test"]["steered"], rep["test"]["unsteered"]
    assert s["ci"][0] > u["ci"][1], (s, u)
    assert rep["verdict"]["steered_beats_unsteered"]
    assert len(rep["cells"]) == 48
