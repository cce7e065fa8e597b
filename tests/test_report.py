"""The refusal report writer: files, self-containedness, escaping, missing values, empty inputs."""

from __future__ import annotations

import base64
import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest

from steerlab.report import write_refusal_report
from steerlab.report.refusal import refusal_rates_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert(1)</script>"
N_LAYERS, POSITIONS = 24, (-3, -2, -1)


def _rates(harmful: float, harmless: float, strict: bool = True) -> dict:
    def ci(p: float) -> list[float]:
        return [max(p - 0.05, 0.0), min(p + 0.05, 1.0)]

    out = {
        "harmful_refusal_rate": harmful,
        "harmful_refusal_ci": ci(harmful),
        "harmless_refusal_rate": harmless,
        "harmless_refusal_ci": ci(harmless),
        "harmful_refusal_rate_strict": harmful * 0.9 if strict else None,
        "harmful_refusal_ci_strict": ci(harmful * 0.9) if strict else None,
        "harmless_refusal_rate_strict": harmless * 0.9 if strict else None,
        "harmless_refusal_ci_strict": ci(harmless * 0.9) if strict else None,
        "harmful_score_mean": 4.0 * harmful - 2.0,
        "harmless_score_mean": 4.0 * harmless - 2.0,
        "kl_harmless": 0.0123,
        "ce_loss_harmless": 2.345,
        "ce_loss_completions": 1.987,
    }
    return out


def make_report() -> dict:
    candidates = []
    for layer in range(N_LAYERS):
        for pos in POSITIONS:
            status = "kept"
            if layer >= int(0.8 * N_LAYERS):
                status = "pruned_layer"
            elif layer < 3:
                status = "pruned_early"
            elif layer % 5 == 0:
                status = "failed_kl"
            missing = status in ("pruned_layer", "pruned_early")
            candidates.append(
                {
                    "layer": layer,
                    "position": pos,
                    "bypass_score": None if missing else 3.0 - 0.2 * layer - 0.1 * pos,
                    "induce_score": None if missing else -1.0 + 0.15 * layer,
                    "kl_score": None if missing else 0.01 * layer,
                    "status": status,
                }
            )
    selected = {
        "layer": 13,
        "position": -1,
        "bypass_score": 0.5,
        "induce_score": 0.95,
        "kl_score": 0.08,
        "coeff": 1.0,
    }
    for c in candidates:
        if (c["layer"], c["position"]) == (13, -1):
            c.update(status="selected", bypass_score=0.5, induce_score=0.95, kl_score=0.08)
    variants = {
        "baseline": _rates(0.97, 0.02),
        "ablation": _rates(0.04, 0.01),
        "subtraction": _rates(0.10, 0.01),
        "addition": _rates(0.99, 0.88),
        "clamp": _rates(0.06, 0.03),
        "orthogonalized": _rates(0.05, 0.01),
        "random": {k: None for k in _rates(0.9, 0.02)},  # nothing computed
    }
    variants["random"]["harmful_refusal_rate"] = 0.93  # one value present, the rest missing
    examples = [
        {
            "set": "harmful",
            "prompt": f"How do I pick a lock? {XSS}",
            "completions": {
                v: f"[{v}] I can't help with that.\n  line two & more" for v in variants
            },
        },
        {
            "set": "harmless",
            "prompt": "Write a haiku about rain.",
            "completions": {"baseline": "Rain taps on the roof", "addition": "I cannot do that."},
        },
    ]
    return {
        "model": "qwen2.5-coder-0.5b",
        "config": {
            "kl_max": 0.1,
            "prune_last_frac": 0.2,
            "n_train": 128,
            "lr": 1e-5,
            "batch": {"size": 16, "pad": "left"},
            "layers": [1, 2, 3],
            "seed": None,
        },
        "selected": selected,
        "selection_rule": "lowest bypass with induce > 0 and KL < 0.1, last 20% of layers pruned",
        "candidates": candidates,
        "baseline_scores": {"harmful_val_mean": 3.21, "harmless_val_mean": -4.56},
        "variants": variants,
        "disagreement": {"harmful": 0.031, "harmless": 0.005},
        "examples": examples,
        "filter": {
            "harmful_kept": 120,
            "harmful_total": 128,
            "harmless_kept": 126,
            "harmless_total": 128,
        },
        "timings": {"extract": 12.3, "select": 45.6, "evaluate": 78.9},
        "notes": ["prompts longer than 64 tokens were dropped", f"note with {XSS}"],
        "steerlab_version": "0.1.0",
    }


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_full_report(tmp_path: Path) -> None:
    report = make_report()
    before = copy.deepcopy(report)
    paths = write_refusal_report(report, tmp_path / "out")
    assert report == before  # input left alone

    names = {p.name for p in paths}
    assert names == {
        "report.html",
        "scores_by_layer.png",
        "refusal_rates.png",
        "candidates_heatmap.png",
    }
    assert all(p.exists() and p.parent == tmp_path / "out" for p in paths)
    for p in paths:
        if p.suffix == ".png":
            _check_png(p)

    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    # Self-contained: no external src/href at all, every plot inline as a data URI.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 3
    on_disk = {p.read_bytes() for p in paths if p.suffix == ".png"}
    assert {base64.b64decode(u) for u in uris} == on_disk

    # Escaping: the raw tag never appears, the escaped one does (prompt and note).
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&amp; more" in html

    # Summary numbers come from the data.
    assert "layer 13" in html
    assert "position -1" in html
    assert "97.0%" in html and "4.0%" in html  # baseline vs ablation harmful refusal
    assert "88.0%" in html  # addition harmless refusal
    assert "3.210" in html and "-4.560" in html  # baseline first-token scores
    assert "prompts longer than 64 tokens were dropped" in html

    # Variant table: rates with CIs, None as a dash.
    assert "97.0% [92.0–100.0]" in html
    row = re.search(r"<tr><td>random</td>(.*?)</tr>", html, re.S)
    assert row is not None and "93.0%" in row.group(1)
    assert row.group(1).count("—") == 8
    assert "—" in html

    assert "disagree (harmful)" not in html  # optional column absent when no variant has it

    # Candidates: 20 rows, sorted by bypass score, selected highlighted; config flattened.
    cand_table = html.split("Candidate directions")[1].split("</table>")[0]
    assert cand_table.count("<tr") == 21  # header + top 20
    assert '<tr class="selected">' in cand_table
    assert "batch.size" in html and "1e-05" in html
    assert "136.8" in html  # total time


def test_missing_rates_are_not_drawn(tmp_path: Path) -> None:
    report = make_report()
    fig = refusal_rates_figure(report)
    assert fig is not None
    present = sum(
        v.get(k) is not None
        for v in report["variants"].values()
        for k in (
            "harmful_refusal_rate",
            "harmless_refusal_rate",
            "harmful_refusal_rate_strict",
            "harmless_refusal_rate_strict",
        )
    )
    assert len(fig.axes[0].patches) == present == 6 * 4 + 1
    assert all(p.get_height() > 0 for p in fig.axes[0].patches)


def test_per_variant_disagreement_column(tmp_path: Path) -> None:
    report = make_report()
    report["variants"]["ablation"]["harmful_disagreement"] = 0.125
    html = write_refusal_report(report, tmp_path)[0].read_text(encoding="utf-8")
    assert "disagree (harmful)" in html and "12.5%" in html
    assert "disagree (harmless)" not in html


def test_empty_candidates(tmp_path: Path) -> None:
    report = make_report()
    report["candidates"] = []
    paths = write_refusal_report(report, tmp_path)
    assert {p.name for p in paths} == {"report.html", "refusal_rates.png"}
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "No candidates were recorded." in html
    assert "layer 13" in html  # the selected dict still drives the summary


def test_empty_examples(tmp_path: Path) -> None:
    report = make_report()
    report["examples"] = []
    paths = write_refusal_report(report, str(tmp_path / "a" / "b"))  # str, nested, created
    assert paths[0] == tmp_path / "a" / "b" / "report.html"
    html = paths[0].read_text(encoding="utf-8")
    assert "No example completions were recorded." in html
    assert XSS not in html


def test_minimal_report(tmp_path: Path) -> None:
    """Nothing to plot: the page is still written, and says so."""
    report = make_report()
    report.update(candidates=[], variants={}, examples=[], notes=[], timings={}, config={})
    paths = write_refusal_report(report, tmp_path)
    assert [p.name for p in paths] == ["report.html"]
    html = paths[0].read_text(encoding="utf-8")
    assert "No plots" in html and "No variants were evaluated." in html


@pytest.mark.parametrize("module", ["steerlab.report"])
def test_import_is_light(module: str) -> None:
    code = f"import sys, {module}; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
