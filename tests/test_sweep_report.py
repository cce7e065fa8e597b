"""The sweep report page, from a synthetic ``sweep.json``: the verdict, the test table, the
embedded plots, escaping, and the optional maps (absent, or with necessity not measured)."""

from __future__ import annotations

import copy
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from steerlab.runs import Run
from steerlab.sweep.plots import pareto_front
from steerlab.sweep.report import render_sweep_html, sweep_figures, write_sweep_report
from steerlab.sweep.result import SweepReport

EVIL = "<script>alert('x')</script> & <b>bold</b>"
VERDICT = "steering beats the unsteered model on the test split (intervals separate)"


def _cell(layer: int, coeff: float, score: float | None, ce_inc: float, prompts: int = 8) -> dict:
    key = f"L{layer}:c{coeff:g}:all"
    return {
        "layer": layer,
        "coeff": coeff,
        "positions": "all",
        "key": key,
        "score": score,
        "ce": None if score is None else 2.0 + ce_inc,
        "ce_increase": ce_inc,
        "effect": None if score is None else score - 0.2,
        "distinct2": 0.9,
        "longest_repeat": 2.0,
        "kl": 0.01 * coeff,
        "n": prompts,
        "round": 0,
        "prompts": prompts,
        "examples": [f"{key} one", f"{key} two", EVIL],
        "random": {"score": 0.21, "ce": 2.05, "effect": 0.01},
    }


def make_report() -> dict[str, Any]:
    # 2 layers x 3 coefficients; L2 at coefficient 2 was never run, L1:c2 dropped early.
    cells = [
        _cell(1, 0.5, 0.3, 0.1),
        _cell(1, 1.0, 0.6, 0.4),
        _cell(1, 2.0, 0.7, 2.5, prompts=4),
        _cell(2, 0.5, None, 0.0),
        _cell(2, 1.0, 0.8, 0.9),
    ]
    test = {
        "steered": {
            "score": 0.7812,
            "ci": [0.61, 0.9],
            "ce": 2.9,
            "n": 20,
            "distinct2": 0.88,
            "longest_repeat": 3.0,
            "kl": 0.12,
        },
        "unsteered": {
            "score": 0.1934,
            "ci": [0.1, 0.3],
            "ce": 2.0,
            "n": 20,
            "distinct2": 0.93,
            "longest_repeat": 1.5,
            "kl": None,
        },
        "random": {
            "score": 0.2046,
            "ci": [0.12, 0.31],
            "ci_kind": "central 95% of the random directions' mean scores",
            "mean_ci": [0.18, 0.23],
            "ce": 2.1,
            "n": 20,
            "distinct2": None,
            "longest_repeat": 1.7,
            "kl": 0.02,
            "n_directions": 20,
            "null_scores": [0.2046] * 20,
            "percentile": 100.0,
            "p_direction": 0.0476,
        },
        "paired": {
            "vs_unsteered": {
                "diff": 0.5878,
                "ci": [0.4, 0.75],
                "p": 0.001,
                "n": 20,
                "p_holm": 0.002,
            },
            "vs_null_mean": {
                "diff": 0.5766,
                "ci": [0.4, 0.7],
                "p": 0.001,
                "n": 20,
                "p_holm": 0.002,
            },
        },
    }
    k = [[None, 0.5], [0.5, None]]
    return {
        "kind": "sweep",
        "steerlab_version": "0.0.test",
        "model": {"model_id": "tiny-model", "model_type": "llama", "n_layers": 4, "d_model": 32},
        "provenance": {"steerlab_version": "0.0.test"},
        "behavior": {
            "name": "french",
            "source": "builtin:french",
            "scorer": "language:fr",
            "description": "answers in French",
            "counts": {"selection": 8, "test": 20, "positive": 30, "negative": 30},
        },
        "scorer": {
            "name": "language:fr",
            "kind": "text",
            "library": "x",
            "version": "1",
            "params": {},
        },
        "config": {
            "layers": None,
            "coeffs": "auto",
            "positions": ["all"],
            "search": "auto",
            "max_ce_increase": 1.0,
            "pairs": 2,
            "profile": True,
        },
        "direction": {
            "kind": "extracted",
            "method": "mean_diff",
            "from": "pairs",
            "data_hash": "abc123",
        },
        "layers": [1, 2],
        "norms": {"1": 3.5, "2": 7.25},
        "unsteered_selection": {
            "score": 0.2,
            "ce": 2.0,
            "distinct2": 0.9,
            "longest_repeat": 1.0,
            "n": 8,
            "kl": None,
        },
        "cells": cells,
        "search": {
            "mode": "auto",
            "extended": [2.0],
            "rounds": [{"cells": 6, "prompts": 4}, {"cells": 4, "prompts": 8}],
            "coeffs": [0.5, 1.0, 2.0],
            "cells_run": 5,
            "full_grid_cells": 6,
        },
        "chosen": {
            "layer": 2,
            "coeff": 1.0,
            "positions": "all",
            "key": "L2:c1:all",
            "rule": "highest mean score under the bound",
            "within_bound": True,
            "selection": {"score": 0.8, "ce": 2.9, "ce_increase": 0.9, "n": 8},
        },
        "test": test,
        "verdict": {
            "steered_beats_unsteered": True,
            "steered_moves_score": True,
            "beyond_random_null": True,
            "random_inside_unsteered": True,
            "text": VERDICT,
        },
        "examples": {
            "steered": [
                {"prompt": "Hi <there>", "completion": EVIL},
                {"prompt": "p2", "completion": "Bonjour"},
            ],
            "unsteered": [
                {"prompt": "Hi <there>", "completion": "Hello"},
                {"prompt": "p2", "completion": "Hi"},
            ],
            "random": [{"prompt": "Hi <there>", "completion": "Hey"}],
        },
        "per_prompt": {
            "prompts": ["Hi <there>", "p2"],
            "steered": [0.8, 0.76],
            "unsteered": [0.2, 0.19],
            "random": [[0.2, 0.21]],
        },
        "maps": {
            "pairs": {
                "layers": [1, 2],
                "coeff_each": 0.5,
                "positions": "all",
                "single_effect": [0.1, 0.2],
                "pair_effect": [[None, 0.8], [0.8, None]],
                "interaction": k,
                "pair_ce_increase": [[None, 0.3], [0.3, None]],
            },
            "profile": {
                "layers": [1, 2],
                "coeff": 1.0,
                "sufficiency": [0.4, 0.6],
                "necessity": [0.05, 0.3],
                "necessity_all_layers": 0.45,
                "present": 6,
                "present_score": 0.7,
                "source": "positive contrast prompts",
            },
        },
        "cost": {"rows_generated": 123, "tokens_generated": 4567},
        "timings": {
            "seconds": {"direction": 1.5, "grid": 10.25, "total": 12.0},
            "compute_seconds": {"direction": 1.5, "grid": 20.0, "total": 21.5},
            "resumed_steps": ["grid"],
        },
    }


def _pngs(page: str) -> int:
    return page.count("data:image/png;base64,")


@pytest.fixture(scope="module")
def page() -> str:
    return render_sweep_html(make_report())


def test_written_by_run(tmp_path: Path) -> None:
    run = Run(tmp_path / "out", kind="sweep")
    report = make_report()
    before = copy.deepcopy(report)
    write_sweep_report(run, report)
    assert report == before  # not modified
    text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and VERDICT in text
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_verdict_and_test_table(page: str) -> None:
    assert page.index(VERDICT) < page.index("Test split")
    assert "verdict-ok" in page
    for text in ("0.781 [0.61, 0.90]", "0.193 [0.10, 0.30]", "0.205 [0.12, 0.31]", "+0.588"):
        assert text in page, text
    assert "2.900" in page and "never used for choosing" in page
    assert "It met the fluency bound" in page
    assert "tiny-model" in page and "french" in page


def test_plots_embedded(page: str) -> None:
    # grid (one positions value), Pareto, pair interaction, profile
    assert _pngs(page) == 4
    figs = sweep_figures(json.loads(json.dumps(make_report())))
    assert [len(figs[k]) for k in ("grid", "pareto", "pairs", "profile")] == [1, 1, 1, 1]
    assert all(png.startswith(b"\x89PNG") for v in figs.values() for png, _ in v)


def test_escapes_model_text(page: str) -> None:
    assert "<script>" not in page and "<b>bold</b>" not in page
    assert html.escape(EVIL, quote=True) in page or "&lt;script&gt;" in page
    assert "Hi &lt;there&gt;" in page


def test_search_cost_timings_config(page: str) -> None:
    assert "successive halving" in page and "5 of the 6 cells" in page
    assert "extended with coefficient(s) [2]" in page
    assert "4567" in page and "10.2" in page and "Resumed steps" in page
    assert "max_ce_increase" in page and "mean_diff" in page and "language:fr" in page


def test_without_maps_and_with_missing_values() -> None:
    report = make_report()
    del report["maps"]
    report["chosen"]["within_bound"] = False
    report["verdict"] = {
        "steered_beats_unsteered": False,
        "steered_moves_score": False,
        "beyond_random_null": False,
        "random_inside_unsteered": True,
        "text": "not steerable here",
    }
    report["test"]["random"]["score"] = math.nan  # the in-memory report: NaN, not None
    report["cells"][0]["random"] = None
    text = render_sweep_html(report)
    assert _pngs(text) == 2  # grid and Pareto only
    assert "Several layers at once" not in text
    assert "No cell met the fluency bound" in text and "verdict-warning" in text
    label = "random directions, same norm and cell \\(mean\\)"
    row = re.search(rf"<td>{label}</td>(.*?)</tr>", text).group(1)
    assert row.startswith('<td class="num">—</td><td class="num">—</td>')  # NaN shown as missing
    assert "nan" not in row


def test_necessity_not_measured() -> None:
    report = make_report()
    prof = report["maps"]["profile"]
    prof.update(necessity=None, note="only 2 prompt(s) show the behaviour unsteered (need 4)")
    prof.pop("necessity_all_layers")
    prof.pop("present_score")
    del report["maps"]["pairs"]
    text = render_sweep_html(report)
    assert _pngs(text) == 3  # grid, Pareto, profile
    assert "Necessity was not measured: only 2 prompt(s)" in text


def test_grid_absent_cell_and_large_grid() -> None:
    report = make_report()
    report["cells"] = [c for c in report["cells"] if c["layer"] == 1]
    report["config"]["positions"] = ["all", "prompt"]  # no cell at "prompt": no figure
    figs = sweep_figures(report)
    assert len(figs["grid"]) == 1
    big = make_report()
    big["cells"] = [_cell(lay, c, 0.5, 0.2) for lay in range(30) for c in (0.5, 1, 2, 4)]
    assert len(sweep_figures(big)["grid"]) == 1  # not annotated, still drawn


def test_typed_report_is_the_json_key_for_key() -> None:
    report = make_report()
    typed = SweepReport.from_dict(report)
    assert json.dumps(typed.to_dict()) == json.dumps(report)  # same keys, order and values
    assert typed.test.vs_unsteered.p_holm == 0.002 and typed.verdict.text == VERDICT
    assert render_sweep_html(typed) == render_sweep_html(report)  # parsed once, either way
    del report["maps"]
    assert "maps" not in SweepReport.from_dict(report).to_dict()  # optional: left out
    del report["test"]["paired"]  # always written: a file without it is not a sweep.json
    with pytest.raises(KeyError):
        SweepReport.from_dict(report)


def test_pareto_front() -> None:
    pts = [(0.1, 0.3), (0.4, 0.6), (0.5, 0.5), (0.9, 0.8), (2.5, 0.7), (math.nan, 1.0)]
    assert pareto_front(pts) == [(0.1, 0.3), (0.4, 0.6), (0.9, 0.8)]
