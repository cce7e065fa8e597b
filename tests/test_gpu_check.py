"""benchmarks/gpu_check.py on CPU: its checks hold here, and its own machinery is sound."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_model

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def gc_mod():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("on_device", [False, True])
def test_digest_sees_one_bit_and_ties(gc_mod, on_device: bool) -> None:
    model = make_model("llama")
    h0 = gc_mod.digest(model, on_device)
    assert gc_mod.digest(model, on_device) == h0
    w = next(model.parameters())
    with torch.no_grad():
        bits = w.data.view(-1).view(torch.int32)
        bits[7] ^= 1  # one bit of one float
        assert gc_mod.digest(model, on_device) != h0
        bits[7] ^= 1
        assert gc_mod.digest(model, on_device) == h0
        flat = w.data.view(-1)
        a, b = float(flat[40]), float(flat[77])  # row 0 is the zero padding embedding
        assert a != b
        flat[40], flat[77] = b, a  # same values, other places
        assert gc_mod.digest(model, on_device) != h0


def test_a_failing_check_does_not_stop_the_rest(gc_mod, monkeypatch) -> None:
    def boom(env):
        raise ValueError("broken on purpose")

    def fine(env):
        return True, "ok", {}

    def skip(env):
        raise gc_mod.Skip("not here")

    monkeypatch.setattr(gc_mod, "CHECKS", [("a", boom), ("b", skip), ("c", fine)])
    env = gc_mod.Env(gc_mod.parse(["--cpu"]))
    rows = gc_mod.run_checks(env, say=lambda _m: None)
    assert [r["held"] for r in rows] == [False, None, True]
    assert "broken on purpose" in rows[0]["detail"]


@pytest.mark.slow  # 2.5 minutes on 2 cores: the whole script (its parts are tested above)
def test_every_check_holds_on_cpu(gc_mod, capsys) -> None:
    """The real run (smollm2-135m, --quick, refusal and discover skipped), in this process."""
    rc = gc_mod.main(["--quick", "--skip-refusal", "--skip-discover", "--cpu"])
    out = capsys.readouterr().out
    assert rc == 0, out
    import json

    result = json.loads(out.strip().splitlines()[-1])
    ran = [c for c in result["checks"] if c["held"] is not None]
    assert {c["check"] for c in ran} == {
        "load",
        "extract",
        "steer+generate",
        "ablate, clamp",
        "placement",
        "orthogonalize",
        "sweep",
    }
    assert all(c["held"] for c in ran), [c for c in ran if not c["held"]]
