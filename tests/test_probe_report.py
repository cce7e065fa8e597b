"""The probe report page, from a synthetic ``probe.json``: the summary in words (best layers,
controls at chance, erasure, agreement), the embedded plots, escaping, the optional sections
(transfer, read vs steer, projections) and missing values; and the real sample if present."""

from __future__ import annotations

import copy
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from steerlab.probe.fit import projection_accuracy, projection_summary
from steerlab.probe.report import probe_figures, render_probe_html, write_probe_report
from steerlab.runs import Run

EVIL = "<script>alert('x')</script> & <b>bold</b>"
METHODS = ("mean_diff", "pca", "logistic")
LAYERS = [2, 4, 6]
SAMPLE = Path("/tmp/probe1/probe.json")


def _s(acc: float | None, lo: float | None, hi: float | None, auroc: float = 0.5) -> dict:
    return {
        "accuracy": acc,
        "accuracy_ci": [lo, hi],
        "auroc": auroc,
        "auroc_ci": [max(0.0, auroc - 0.1), min(1.0, auroc + 0.1)],
    }


def _null(row: dict, sd: float, pct: dict[str, float]) -> dict:
    """A null row as the pipeline writes it: the mean over 20 draws, their spread, and each
    method's percentile and p-value (p = (1 + draws at or above) / 21)."""
    p = {m: (1 + round(20 * (1 - v / 100))) / 21 for m, v in pct.items()}
    return row | {"accuracy_sd": sd, "draws": 20, "percentile": pct, "p_value": p}


def make_report() -> dict[str, Any]:
    methods = {
        "mean_diff": [_s(0.70, 0.55, 0.82, 0.8), _s(0.875, 0.75, 0.95, 0.93), _s(0.8, 0.7, 0.9)],
        "pca": [_s(0.65, 0.5, 0.8, 0.7), _s(0.85, 0.7, 0.95, 0.9), _s(0.9125, 0.8, 0.97, 0.95)],
        "logistic": [_s(0.6, 0.45, 0.75), _s(0.8, 0.65, 0.9), _s(0.85, 0.7, 0.95)],
    }
    cos = [[[1.0, 0.9, 0.6], [0.9, 1.0, 0.5], [0.6, 0.5, 1.0]] for _ in LAYERS]
    cos[1] = [[1.0, 0.8, 0.4], [0.8, 1.0, 0.3], [0.4, 0.3, 1.0]]
    eff = {
        m: [
            {"n_per_class": 4, "accuracy": 0.6 + 0.01 * k, "interval": [0.5, 0.7], "draws": 20},
            {"n_per_class": 16, "accuracy": 0.7 + 0.01 * k, "interval": [0.6, 0.8], "draws": 20},
            {"n_per_class": 40, "accuracy": 0.8 + 0.01 * k, "interval": [0.8, 0.8], "draws": 1},
        ]
        for k, m in enumerate(METHODS)
    }
    proj = {
        "mean_diff": {
            "layer": 4,
            "pos": [1.0, 2.0, 3.0, 0.1],
            "neg": [-1.0, -2.0, 0.0, 0.5],
            "threshold": 0.3,
        },
        "pca": {"layer": 6, "pos": [0.5, 0.7], "neg": [-0.5, 0.6], "threshold": 0.0},
        "logistic": {"layer": 6, "pos": [2.0, 3.0], "neg": [-2.0, -3.0], "threshold": 0.0},
    }
    for p in proj.values():  # as the pipeline writes them
        p |= projection_summary(p)
    rows = [
        ("mean_diff", 4, "best layer for reading", 0.875, 0.61, 0.21, 0.3),
        ("pca", 6, "best layer for reading", 0.9125, 0.55, 0.15, 0.4),
        ("logistic", 6, "best layer for reading", 0.85, 0.72, 0.32, 0.9),
        ("mean_diff", 4, "common layer", 0.875, 0.61, 0.21, 0.3),
        ("pca", 4, "common layer", 0.85, 0.58, 0.18, 0.35),
        ("logistic", 4, "common layer", 0.8, 0.5, 0.1, 0.5),
    ]
    return {
        "kind": "probe",
        "steerlab_version": "0.0.test",
        "model": {"model_id": "tiny-<model>", "model_type": "llama", "n_layers": 8, "d_model": 64},
        "data": {
            "counts": {
                "train_pos": 40,
                "train_neg": 41,
                "test_pos": 17,
                "test_neg": 18,
                "transfer_pos": 12,
                "transfer_neg": 13,
            },
            "split": {"kind": "stratified", "seed": 0, "test_fraction": 0.3, "note": EVIL},
        },
        "config": {"layers": "2,4,6", "position": "last", "methods": list(METHODS), "draws": 20},
        "layers": list(LAYERS),
        "methods": methods,
        "controls": {
            "shuffled": [
                _null(_s(0.52, 0.4, 0.65), 0.05, {"mean_diff": 90.0}),
                _null(_s(0.55, 0.42, 0.68), 0.06, {"mean_diff": 100.0, "pca": 97.5}),
                _null(_s(0.48, 0.35, 0.6), 0.05, {"pca": 100.0, "logistic": 100.0}),
            ],
            "random": [
                _null(_s(0.5, 0.38, 0.62), 0.04, {}),
                _null(_s(0.69, 0.56, 0.8), 0.07, {"mean_diff": 95.0}),
                _null(_s(0.51, 0.4, 0.63), 0.04, {"pca": 100.0}),
            ],
            "n_permutations": 20,
            "n_random_directions": 20,
        },
        "erasure": {
            "after_leace": [_s(0.5, 0.4, 0.6), _s(0.5, 0.4, 0.6), _s(0.5, 0.4, 0.6)],
            "after_mean_diff_ablation": [
                _s(0.6, 0.45, 0.7),
                _s(0.72, 0.6, 0.84),
                _s(0.5, 0.4, 0.6),
            ],
        },
        "agreement": {
            "methods": list(METHODS),
            "cosine": cos,
            "reference": "mean_diff",
            "mean_cosine_to_reference": (0.8 + 0.4) / 2,  # at its best layer, 4
        },
        "validation_accuracy": {
            "mean_diff": [0.6, 0.9, 0.8],
            "pca": [0.6, 0.7, 0.85],
            "logistic": [0.5, 0.7, 0.8],
        },
        "best": {
            "mean_diff": {"layer": 4, "rule": "highest accuracy on a validation part of train"},
            "pca": {"layer": 6, "rule": "highest accuracy on a validation part of train"},
            "logistic": {"layer": 6, "rule": "highest accuracy on a validation part of train"},
        },
        "logistic_c": [1.0, 0.1, 0.01],
        "sample_efficiency": eff,
        "projections": proj,
        "transfer": {
            "mean_diff": [_s(0.6, 0.45, 0.75), _s(0.7777, 0.6, 0.9), _s(0.7, 0.55, 0.85)],
            "pca": [_s(0.55, 0.4, 0.7), _s(0.6, 0.45, 0.75), _s(0.58, 0.42, 0.73)],
            "logistic": [_s(0.5, 0.35, 0.65), _s(0.52, 0.37, 0.67), _s(0.54, 0.39, 0.69)],
        },
        "read_vs_steer": {
            "behavior": {"name": "sentiment", "source": "builtin:sentiment", "scorer": EVIL},
            "coeff": 0.25,
            "scale": "coeff x the median residual norm at the layer (the same for every method)",
            "unsteered": {"score": 0.4, "ce": 1.5, "n": 24},
            "rows": [
                {
                    "method": m,
                    "layer": lay,
                    "which": which,
                    "read_accuracy": read,
                    "steer_score": score,
                    "steer_effect": effect,
                    "ce_increase": ce,
                    "kl": 0.1,
                    "n": 24,
                }
                for m, lay, which, read, score, effect, ce in rows
            ],
            "random": [
                {"layer": 4, "steer_score": 0.43, "steer_effect": 0.03, "ce_increase": 0.2},
                {"layer": 6, "steer_score": 0.38, "steer_effect": -0.02, "ce_increase": 0.25},
            ],
            "split": "selection",
        },
        "timings": {
            "seconds": {"capture": 3.25, "probes": 1.5, "total": 5.0},
            "compute_seconds": {"capture": 9.75, "probes": 1.5, "total": 11.5},
            "resumed_steps": ["acts-train-pos"],
        },
    }


def _pngs(page: str) -> int:
    return page.count("data:image/png;base64,")


def _text(page: str) -> str:
    """The page's visible text, tags dropped and whitespace collapsed."""
    page = re.sub(r"<style>.*?</style>|<img[^>]*>", "", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


@pytest.fixture(scope="module")
def page() -> str:
    return render_probe_html(make_report())


def test_written_by_run(tmp_path: Path) -> None:
    run = Run(tmp_path / "out", kind="probe")
    report = make_report()
    before = copy.deepcopy(report)
    write_probe_report(run, report)
    assert report == before  # not modified
    text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "Best layer per method" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text


def test_summary_in_words(page: str) -> None:
    t = _text(page)
    # best layer and test accuracy [CI] per method
    assert "mean_diff : layer 4, test accuracy 87.5% [75.0–95.0]" in t
    assert "pca : layer 6, test accuracy 91.2% [80.0–97.0]" in t
    assert "Highest test accuracy at a chosen layer: pca , 91.2% at layer 6" in t
    # shuffled control: at chance everywhere; random direction: off chance at layer 4
    assert "Shuffled-label control" in t and "includes 0.5 at 3 of 3" in t
    assert "It stays near chance, as it must" in t
    assert "It is off chance at layer 4 (up to 69.0% at layer 4)" in t
    # LEACE to chance; the mean-difference ablation alone does not, at layer 4
    assert "LEACE brings the logistic probe to chance at every layer" in t
    assert "test accuracy 50.0% at every layer" in t
    assert "leaves it readable at layer 4 (up to 72.0%)" in t
    # agreement at mean_diff's best layer (4): mean of 0.8 and 0.4
    assert "at layer 4, where mean_diff reads best, the mean cosine" in t
    assert "is 0.60 (pca 0.80, logistic 0.40)" in t
    assert "in 64 dimensions would have a cosine of about ±0.12" in t


def test_layer_table_and_choice(page: str) -> None:
    t = _text(page)
    assert "<strong>87.5% [75.0–95.0]</strong>" in page  # mean_diff's chosen layer in bold
    row = re.search(r'<tr><td class="num">4</td>(.*?)</tr>', page).group(1)
    for text in (
        "87.5% [75.0–95.0]",
        "55.0% [42.0–68.0]",
        "69.0% [56.0–80.0]",
        "72.0% [60.0–84.0]",
    ):
        assert text in row, text
    assert "How the layers were chosen" in t and "<strong>90.0%</strong>" in page
    assert "0.01" in t  # logistic C


def test_plots_embedded(page: str) -> None:
    # accuracy, sample efficiency, agreement, transfer, projections
    assert _pngs(page) == 5
    figs = probe_figures(json.loads(json.dumps(make_report())))
    assert {k: len(v) for k, v in figs.items()} == {
        "accuracy": 1,
        "efficiency": 1,
        "agreement": 1,
        "transfer": 1,
        "projections": 1,
    }
    assert all(png.startswith(b"\x89PNG") for v in figs.values() for png, _ in v)


def test_efficiency(page: str) -> None:
    t = _text(page)
    assert "With 4 training examples per class, logistic reads best (62.0%)" in t
    assert "With 40 training examples per class, logistic reads best (82.0%)" in t
    assert "pca (layer 6)" in t and "70.0% [60.0–80.0]" in t


def test_transfer(page: str) -> None:
    t = _text(page)
    assert "Transfer" in t and "12 positive, 13 negative" in t
    assert "77.8% [60.0–90.0]" in t  # mean_diff's transfer accuracy at its best layer
    assert "yes: at chance" in t and "87.5% → 77.8% [60.0–90.0]" in t


def test_read_vs_steer(page: str) -> None:
    t = _text(page)
    # best layers: pca reads best (91.2%) but logistic steers most (+0.320 vs +0.150)
    assert (
        "the best reader is pca (91.2%), but it is not the best steerer: logistic moves the "
        "score most (+0.320, against +0.150 for pca)"
    ) in t
    # common layer: mean_diff both reads and steers best
    assert "At the common layer (4): the best reader is mean_diff (87.5%), and it is also" in t
    assert "a random direction of the same norm at these layers moved it by -0.020 to +0.030" in t
    assert "at this layer moved it by +0.030." in t  # the common layer, 4, alone
    assert "unsteered" in t and "0.400" in t and "random direction 6 same strength" in t


def test_projections(page: str) -> None:
    t = _text(page)
    assert "Test examples along each direction" in t
    # mean_diff: pos 1, 2, 3 above 0.3 (0.1 not); neg -1, -2, 0 below (0.5 not): 6 of 8
    assert projection_accuracy(make_report()["projections"]["mean_diff"]) == 6 / 8
    section = page[page.index("Test examples along each direction") :]
    row = re.search(r"<tr><td>mean_diff</td>(.*?)</tr>", section).group(1)
    assert "1.52 (n = 4)" in row and "-0.62 (n = 4)" in row and "75.0%" in row
    assert "87.5%" in row  # the reported test accuracy beside it


def test_escapes(page: str) -> None:
    assert "<script>" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;" in page and "tiny-&lt;model&gt;" in page


def test_timings_config_data(page: str) -> None:
    t = _text(page)
    assert "Resumed steps" in t and "9.8" in t and "3.2" in t
    assert "split.test_fraction" in t and "train 40 41" in t
    assert "Configuration" in t and "2,4,6" in t


def test_optional_sections_absent_and_missing_values() -> None:
    report = make_report()
    for key in ("transfer", "read_vs_steer", "projections"):
        del report[key]
    report["data"]["counts"].update(transfer_pos=0, transfer_neg=0)
    report["methods"]["pca"][2]["accuracy"] = math.nan  # the in-memory report: NaN
    report["methods"]["pca"][2]["accuracy_ci"] = [None, None]
    report["controls"]["random"][1] = _s(None, None, None)
    report["sample_efficiency"]["logistic"] = []
    report["logistic_c"] = None
    text = render_probe_html(report)
    t = _text(text)
    assert _pngs(text) == 3  # accuracy, efficiency, agreement
    assert "Transfer" not in t and "Read vs steer" not in t
    assert "Per-example projections were not recorded" in t
    assert "pca : layer 6, test accuracy —" in t
    row = re.search(r'<tr><td class="num">6</td>(.*?)</tr>', text).group(1)
    cells = re.findall(r'<td class="num">(.*?)</td>', row)
    assert cells[1] == "<strong>—</strong>" and "nan" not in row  # NaN shown as missing
    assert "Highest test accuracy at a chosen layer: mean_diff , 87.5% at layer 4" in t
    assert "includes 0.5 at 2 of 3 (1 without an interval)" in t
    assert "logistic (layer" not in t  # no sample-efficiency column without points


def test_agreement_with_missing_cosines() -> None:
    report = make_report()
    report["agreement"]["cosine"][1] = None  # mean_diff's best layer: no matrix
    report["agreement"]["cosine"][0][0][1] = math.nan
    text = render_probe_html(report)
    assert _pngs(text) == 4 and "No cosines were recorded" in text
    assert "where mean_diff reads best" not in text


def test_bare_report() -> None:
    text = render_probe_html({"kind": "probe"})
    assert _pngs(text) == 0 and "No layer was scored" in text
    assert "Sample efficiency was not measured" in text


@pytest.mark.skipif(not SAMPLE.exists(), reason="no sample run at /tmp/probe1")
def test_real_sample(tmp_path: Path) -> None:
    report = json.loads(SAMPLE.read_text(encoding="utf-8"))
    text = render_probe_html(report)
    t = _text(text)
    n = 3 + bool(report.get("transfer")) + bool(report.get("projections"))
    assert _pngs(text) == n
    for m, b in report["best"].items():
        assert f"{m} : layer {b['layer']}, test accuracy" in t
    if report.get("read_vs_steer"):
        assert "Read vs steer" in t and "the best reader is" in t
    assert "<script" not in text


def test_nulls_at_the_chosen_layers(page: str) -> None:
    t = _text(page)
    assert "20 permutations per layer, each choosing its own C on train" in t
    assert "Random directions (20 unit directions per layer, each signed on train" in t
    section = page[page.index("Against the nulls") :]
    row = re.search(r"<tr><td>mean_diff</td>(.*?)</tr>", section).group(1)
    # mean_diff at layer 4: permutations 55.0% +- 6.0%, percentile 100, p 1/21; random 69%
    assert "87.5% [75.0–95.0]" in row
    assert "55.0% ± 6.0%" in row and "100" in row and "0.048" in row
    assert "69.0% ± 7.0%" in row and "95" in row and "0.095" in row
    report = make_report()
    del report["controls"]["n_permutations"]
    for key in ("shuffled", "random"):
        report["controls"][key] = [
            {k: v for k, v in r.items() if k in ("accuracy", "accuracy_ci")}
            for r in report["controls"][key]
        ]
    old = _text(render_probe_html(report))  # a probe.json from before the nulls
    assert "Shuffled-label control (logistic regression on permuted train labels):" in old
