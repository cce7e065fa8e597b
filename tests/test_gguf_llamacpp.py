"""The GGUF export in a real llama.cpp (slow; needs ``bash benchmarks/llamacpp/build.sh`` once,
4 min on 2 cores; skipped where the binary is missing).

On smollm2-135m, llama.cpp's own control-vector loader applies ``steerlab export gguf``'s file
and the change it makes to the next-token logits matches steerlab's runtime steering (per-prompt
correlation > 0.99), while the same vector one block later does not match as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_llamacpp_applies_the_export_as_steerlab_steers(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from _llamacpp import LlamaCppNotBuilt, find_binary

        try:
            find_binary()
        except LlamaCppNotBuilt as e:
            pytest.skip(str(e))
    finally:
        sys.path.remove(str(BENCH))
    out = tmp_path / "gguf.json"
    cmd = [
        sys.executable,
        str(BENCH / "bench_gguf.py"),
        "--quick",
        "--models",
        "smollm2-135m",
        "--no-repeng",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())["models"]["smollm2-135m"]
    for case in ("one layer", "4 layers"):
        r = res[case]
        assert r["logit_diff_corr_min"] > 0.99, r
        assert r["off_by_one_corr_mean"] < r["logit_diff_corr_mean"], r
