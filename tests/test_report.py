"""The refusal report: files, self-containedness, escaping (autoescape), missing values, failed
and partial reports, verdicts, export, timings, the shared template environment, the model card."""

from __future__ import annotations

import base64
import copy
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from steerlab.refusal.config import RefusalConfig
from steerlab.refusal.report import refusal_files, refusal_rates_figure, write_refusal_report
from steerlab.refusal.result import RefusalReport, VariantMetrics
from steerlab.refusal.summary import model_card
from steerlab.report.render import environment

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
    variants["ablation"]["intervention"] = {
        "harmful": {"kind": "ablate", "layer": None, "vector": {"norm": 1.0, "sha256": "abc123"}},
        "harmless": {"kind": "ablate", "layer": None, "vector": {"norm": 1.0, "sha256": "abc123"}},
        "generated_on": ["harmful", "harmless"],
    }
    variants["addition"]["intervention"] = {
        "harmful": {"kind": "steer", "layers": 13, "coeff": 1.25, "positions": None},
        "harmless": {"kind": "steer", "layers": 13, "coeff": 1.25, "positions": None},
        "generated_on": ["harmless"],
    }
    variants["baseline"]["intervention"] = {
        "harmful": {"kind": "none"},
        "harmless": {"kind": "none"},
        "generated_on": ["harmful", "harmless"],
    }
    return {
        "status": "complete",
        "failure": None,
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
        "verdicts": [
            {"check": "ablation_vs_baseline", "level": "ok", "text": "Ablation separates."},
            {"check": "ablation_vs_random", "level": "warning", "text": "Overlaps the control."},
        ],
        "export": None,
        "timings": {"extract": 12.3, "select": 45.6, "evaluate": 78.9},  # no total: summed
        "compute_seconds": {"extract": 20.5, "select": 45.6, "evaluate": 78.9, "total": 145.0},
        "resumed_steps": ["candidates"],
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
    fig = refusal_rates_figure(RefusalReport.from_dict(report))
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


def _page(report: dict) -> str:
    """The page alone (no plots drawn: these tests are about the markup)."""
    from steerlab.refusal.report import render_refusal_html

    return render_refusal_html(report, {})


def _section(html: str, title: str) -> str:
    """The HTML from ``<h2>title</h2>`` to the next ``<h2>`` (or the end)."""
    start = html.index(f"<h2>{title}</h2>")
    end = html.find("<h2>", start + 1)
    return html[start : end if end != -1 else len(html)]


def _rows(html: str) -> list[list[str]]:
    """Body rows of the tables in ``html``, as lists of cell texts."""
    return [
        re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)
        if "<td" in row
    ]


def failed_report() -> dict:
    """What build_report returns when the candidates step raised: most keys empty or None."""
    return {
        "kind": "steerlab.refusal",
        "status": "failed",
        "failure": {"step": "candidates", "error": "CUDA out of memory <gpu 0>"},
        "model": "tiny",
        "config": {"kl_max": 0.1, "positions_used": None, "coeff_chosen": None, "data": None},
        "selected": None,
        "selection_rule": "lowest bypass score",
        "candidates": [],
        "coefficient_scan": [],
        "baseline_scores": None,
        "variants": {},
        "verdicts": [],
        "disagreement": {"harmful": None, "harmless": None},
        "examples": [],
        "filter": {"harmful_kept": 10, "harmful_total": 12, "harmless_kept": 12},
        "export": None,
        "timings": {"filter": 1.25, "candidates": 3.5, "total": 5.0},
        "compute_seconds": {"filter": 1.25, "candidates": 3.5, "total": 4.75},
        "resumed_steps": [],
        "notes": [],
        "steerlab_version": "0.1.0",
    }


def test_failed_report_has_banner_and_renders_what_it_has(tmp_path: Path) -> None:
    files = refusal_files(failed_report())
    assert list(files) == ["report.html"]  # nothing to plot, and no crash on the None/empty keys
    html = files["report.html"].decode("utf-8")
    banner = "This run stopped at step candidates: CUDA out of memory &lt;gpu 0&gt;"
    assert banner in html
    assert html.index('class="failure"') < html.index('<section class="summary">')  # on top
    assert "No direction was selected." in html and "No variants were evaluated." in html
    assert "No candidates were recorded." in html and "<h2>Verdict</h2>" not in html
    assert "<h2>Export</h2>" not in html and "disagree on" not in html  # no data: no sentence
    assert ["data", "—"] in _rows(_section(html, "Configuration"))
    filt = _rows(_section(html, "Prompt filter"))
    assert ["harmful", "10", "12", "83.3%"] in filt and ["harmless", "12", "—", "—"] in filt
    assert 'class="failure"' not in _page(make_report())  # a complete run has no banner


def test_all_user_text_is_escaped() -> None:
    """Each field gets its own tag: with autoescape off, every one of them would leak."""

    def tag(i: str) -> str:
        return f'<script>alert("{i}")</script>'

    report = make_report()
    report.update(status="failed", failure={"step": tag("step"), "error": tag("error")})
    report["model"] = tag("model")
    report["selection_rule"] = tag("rule")
    report["examples"][0]["prompt"] = tag("prompt")
    report["examples"][1]["completions"]["baseline"] = tag("completion")
    report["notes"] = [tag("note")]
    report["verdicts"][1]["text"] = tag("verdict")
    report["config"][tag("key")] = tag("value")
    report["timings"][tag("timing")] = 1.0
    report["candidates"][40]["status"] = tag("status")
    report["variants"]["clamp"]["intervention"] = {
        "harmful": {"kind": tag("kind")},
        "harmless": {"kind": "none"},
        "generated_on": [tag("set")],
    }
    report["export"] = {"dir": tag("dir"), "check": {}, "error": tag("export")}
    html = _page(report)
    assert "<script" not in html.lower()
    fields = ["step", "error", "model", "rule", "prompt", "completion", "note", "verdict", "key"]
    fields += ["value", "timing", "status", "kind", "set", "dir", "export"]
    for i in fields:
        assert f"&lt;script&gt;alert(&#34;{i}&#34;)&lt;/script&gt;" in html, i


def test_environment_escapes_html_not_markdown() -> None:
    env = environment()
    assert env.autoescape("refusal.html.j2") is True and env.autoescape("base.html.j2") is True
    assert env.autoescape("model_card.md.j2") is False
    with pytest.raises(jinja2.UndefinedError):  # a template typo fails loudly, never prints ''
        env.from_string("{{ report.missing }}").render(report={})


def test_verdicts_follow_the_summary() -> None:
    html = _page(make_report())
    summary_end = html.index("</section>", html.index('<section class="summary">'))
    assert summary_end < html.index("<h2>Verdict</h2>") < html.index("<h2>Plots</h2>")
    verdict = _section(html, "Verdict")
    assert verdict.count('<li class="verdict-') == 2
    assert re.search(r'<li class="verdict-warning"><strong>warning:</strong> Overlaps', verdict)
    assert re.search(r'<li class="verdict-ok"><strong>ok:</strong> Ablation separates', verdict)
    assert "95% Wilson interval" in verdict


def test_timings_show_this_run_and_reused() -> None:
    timings = _section(_page(make_report()), "Timings")
    assert "this run" in timings and "including reused results" in timings
    rows = _rows(timings)
    assert ["extract", "12.3", "20.5"] in rows  # reused compute from an earlier session
    assert rows[-1] == ["total", "136.8", "145.0"]  # this run summed: the report had no total
    assert "Resumed steps" in timings and "candidates" in timings

    old = make_report()  # a report from before compute_seconds: the second column is a dash
    del old["compute_seconds"], old["resumed_steps"]
    rows = _rows(_section(_page(old), "Timings"))
    assert ["select", "45.6", "—"] in rows and "Resumed" not in _page(old)


def test_what_each_variant_applies() -> None:
    html = _page(make_report())
    rows = _rows(html.split("What each variant applies")[1].split("</table>")[0])
    assert rows == [
        ["baseline", "nothing", "nothing", "harmful, harmless"],
        ["ablation", "ablate, all layers", "ablate, all layers", "harmful, harmless"],
        ["addition", "steer, layers 13, coeff 1.25", "steer, layers 13, coeff 1.25", "harmless"],
    ]
    assert "abc123" not in html  # vector hashes stay in report.json
    assert "95% Wilson interval" in _section(html, "Interventions")


CHECK = {
    "max_abs_diff": 1.2e-5,
    "max_rel_diff": 3.4e-7,
    "ablation_effect_rel": 0.12,
    "dtype": "float32",
    "tolerance_rel": 1e-3,
    "prompts": 8,
    "passed": True,
}


def test_export_written() -> None:
    report = make_report()
    report["export"] = {"dir": "/runs/abliterated", "check": CHECK, "equivalence": "exact"}
    export = _section(_page(report), "Export")
    assert "written to <code>/runs/abliterated</code>" in export and "not written" not in export
    rows = _rows(export)
    assert ["max |logit difference|", "1.20e-05"] in rows and ["passed", "yes"] in rows
    assert ["tolerance (relative)", "0.001"] in rows and ["dtype", "float32"] in rows


def test_export_failed_check() -> None:
    report = make_report()
    check = {**CHECK, "max_rel_diff": 0.5, "passed": False}
    err = "the exported model differs from runtime ablation by 5.00e-01 & more; not exported"
    report["export"] = {"dir": "/runs/abl", "check": check, "error": err, "equivalence": None}
    export = _section(_page(report), "Export")
    assert "failed its check and was <strong>not written</strong> to /runs/abl" in export
    assert "by 5.00e-01 &amp; more; not exported" in export and "written to <code>" not in export
    assert ["passed", "no"] in _rows(export) and "Equivalence" not in export


def test_export_interrupted_by_a_failed_step() -> None:
    report = make_report()
    report.update(status="failed", failure={"step": "export", "error": "disk full"})
    report["export"] = {"dir": "/runs/abl", "check": {**CHECK, "passed": None}, "error": None}
    html = _page(report)
    assert "This run stopped at step export: disk full" in html
    export = _section(html, "Export")
    assert "did not finish" in export and "written to <code>" not in export
    assert ["passed", "— (not applicable)"] in _rows(export)


def test_model_card_template() -> None:
    best = {"layer": 13, "position": -1, "bypass_score": 0.5, "induce_score": 0.95}
    best["kl_score"] = 0.0812
    metrics = {
        "baseline": _rates(0.97, 0.02),
        "orthogonalized": {"harmful_refusal_rate": 0.04, "harmful_refusal_ci": [0.01, 0.1]},
    }
    typed = {n: VariantMetrics.from_dict(m) for n, m in metrics.items()}
    card = model_card("org/<m>&co", best, typed, RefusalConfig(max_new_tokens=24), CHECK, "ok")
    assert card.splitlines()[0] == "# org/<m>&co with the refusal direction removed"  # not HTML
    assert "| original model | 97% (95% CI 92%–100%) | 2% (95% CI 0%–7%) |" in card
    assert "| this model | 4% (95% CI 1%–10%) | — |" in card  # missing rate: a dash
    assert "vs runtime ablation = 1.20e-05" in card and "greedy, 24 new tokens" in card
    assert "KL 0.0812" in card and "harmless prompts: —." in card  # no KL measured
    assert card.endswith("not to serve users.\n")


def test_templates_ship_as_package_data() -> None:
    import fnmatch
    import importlib.resources

    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    cfg = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = cfg["tool"]["setuptools"]["package-data"]["steerlab"]
    assert any(d.replace(" ", "").startswith("jinja2>=3.1") for d in cfg["project"]["dependencies"])
    templates = importlib.resources.files("steerlab.report") / "templates"
    names = sorted(t.name for t in templates.iterdir() if t.name.endswith(".j2"))
    assert {"base.html.j2", "refusal.html.j2", "discover.html.j2", "model_card.md.j2"} <= set(names)
    assert all(any(fnmatch.fnmatch(f"report/templates/{n}", p) for p in patterns) for n in names)


@pytest.mark.parametrize("module", ["steerlab.report", "steerlab.refusal.report"])
def test_import_is_light(module: str) -> None:
    code = f"import sys, {module}; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
