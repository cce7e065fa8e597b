"""The refusal pipeline on a model that refuses (qwen2.5-coder-0.5b). Slow: run with -m slow.

The full target protocol (JailbreakBench + Alpaca harmless, 100 each) is
``benchmarks/bench_refusal.py``; this is the quick preset with behavioural assertions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_quick_refusal_run_removes_and_induces_refusal(tmp_path: Path) -> None:
    from steerlab.models.load import load_model
    from steerlab.refusal import QUICK, RefusalConfig, run_refusal

    lm = load_model("qwen2.5-coder-0.5b")
    res = run_refusal(lm, RefusalConfig(**QUICK), tmp_path, export_dir=tmp_path / "export")
    rep = res.to_dict()  # report.json, as the benchmarks read it
    v = rep["variants"]
    base = v["baseline"]["harmful_refusal_rate"]
    assert base >= 0.2  # the model refuses a fair share of clearly harmful asks
    assert v["ablation"]["harmful_refusal_rate"] <= 0.5 * base
    assert v["orthogonalized"]["harmful_refusal_rate"] <= 0.5 * base
    assert v["addition"]["harmless_refusal_rate"] >= 0.5
    assert v["baseline"]["harmless_refusal_rate"] <= 0.1
    assert rep["export"]["max_logit_diff_vs_ablation"] < 1e-4
    lo, _hi = v["baseline"]["harmful_refusal_ci"]
    assert v["random"]["harmful_refusal_rate"] >= lo - 0.15
    # The quick preset selects a middle layer, as the full preset does (it once picked layer 2).
    assert lm.info.n_layers // 4 <= rep["selected"]["layer"] < int(0.8 * lm.info.n_layers)
    verdicts = {x["check"]: x["level"] for x in rep["verdicts"]}
    assert verdicts["ablation_vs_baseline"] == verdicts["ablation_vs_random"] == "ok"
    assert rep["export"]["check"]["passed"]
