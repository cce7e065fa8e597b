"""Exports for stock engines: llama.cpp control-vector GGUF (write, read, layer mapping, bad
files) and steering baked into a plain transformers checkpoint (reloaded without steerlab)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from conftest import D, assert_identical, make_model, make_tokenizer, snapshot
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.directions.artifact import Direction
from steerlab.errors import ArtifactError, LayerError, SteerlabError, VectorError
from steerlab.export.gguf import (
    import_control_vector,
    llamacpp_index,
    read_control_vector,
    write_control_vector,
)
from steerlab.export.hf import export_hf
from steerlab.interventions import Steer
from steerlab.interventions.bias import BakeSteer
from steerlab.models.adapter import get_adapter
from steerlab.models.load import LoadedModel, model_info

PROMPTS = ["Describe a city bus.", "What is a river?", "Tell me about a bridge."]
runner = CliRunner()


def _lm(arch: str = "llama") -> LoadedModel:
    m = make_model(arch)
    ad = get_adapter(m)
    return LoadedModel(m, make_tokenizer(), ad, model_info(m, f"tiny-{arch}", ad))


def _direction(lm: LoadedModel, layers: tuple[int, ...], site: str = "resid_pre") -> Direction:
    g = torch.Generator().manual_seed(3)
    meta = {"site": site, "method": "mean_diff", "model": lm.info.to_dict()}
    return Direction(torch.randn(len(layers), D, generator=g), layers, meta)


@torch.no_grad()
def _logits(model: torch.nn.Module, tok, prompts=PROMPTS) -> torch.Tensor:
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt")
        out.append(model(**ids).logits[0, -1].float())
    return torch.stack(out)


def _saved_vector(tmp_path: Path, model_dir: Path) -> Path:
    """A one-layer (resid_pre 2) direction artifact made for the model saved in ``model_dir``."""
    m = AutoModelForCausalLM.from_pretrained(model_dir)
    info = model_info(m, str(model_dir))
    vec = tmp_path / "v.safetensors"
    Direction(torch.randn(1, D), (2,), {"site": "resid_pre", "model": info.to_dict()}).save(vec)
    return vec


# --- llama.cpp control vectors -------------------------------------------------------------


def test_layer_mapping_follows_llamacpp_convention() -> None:
    # llama.cpp adds direction.il to the OUTPUT of block il; steerlab's resid_pre[l] is the
    # input of block l (= output of block l-1)
    assert llamacpp_index(5, "resid_pre") == 4
    assert llamacpp_index(5, "resid_post") == 5
    with pytest.raises(LayerError, match="rejects il < 1"):
        llamacpp_index(1, "resid_pre")
    with pytest.raises(LayerError):
        llamacpp_index(0, "resid_post")


def test_gguf_written_as_llamacpp_reads_it(tmp_path: Path) -> None:
    lm = _lm()
    d = _direction(lm, (2,))
    out = tmp_path / "cv.gguf"
    info = write_control_vector(d, out, layers="2:4", coeff=2.5)
    assert info["llamacpp_layers"] == [1, 2] and info["steerlab_layers"] == [2, 3]
    r = gguf.GGUFReader(str(out))
    arch = r.get_field("general.architecture")
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    hint = r.get_field("controlvector.model_hint")
    assert bytes(hint.parts[hint.data[0]]).decode() == "llama"
    count = r.get_field("controlvector.layer_count")
    assert int(count.parts[count.data[0]][0]) == 2
    names = {t.name: t for t in r.tensors}
    assert set(names) == {"direction.1", "direction.2"}
    for t in names.values():
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_allclose(np.array(t.data), 2.5 * d.vectors[0].numpy(), rtol=1e-6)


def test_gguf_round_trip_steers_identically(tmp_path: Path) -> None:
    """Export resid_pre layers 2..3, import: the resid_post direction at 1..2 steers the model
    exactly as the original did (same additions, one block earlier, same place)."""
    lm = _lm()
    d = _direction(lm, (2, 3))
    out = tmp_path / "cv.gguf"
    write_control_vector(d, out, coeff=1.5)
    back = import_control_vector(out, lm.info)
    assert back.site == "resid_post" and back.layers == (1, 2)
    assert back.meta["source"]["model_hint_matches"]
    with Steer(d, layers=[2, 3], coeff=1.5).applied(lm):
        want = _logits(lm.model, lm.tokenizer)
    with Steer(back, coeff=1.0).applied(lm):  # all its layers, as llama.cpp applies them
        got = _logits(lm.model, lm.tokenizer)
    base = _logits(lm.model, lm.tokenizer)
    assert (want - base).abs().max() > 1e-2  # the steering does something
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # and back out again: same file content
    again = tmp_path / "again.gguf"
    write_control_vector(back, again)
    a, b = read_control_vector(out), read_control_vector(again)
    assert a.vectors.keys() == b.vectors.keys()
    for k in a.vectors:
        assert torch.equal(a.vectors[k], b.vectors[k])


def _write_raw(path: Path, arch: str, tensors: dict[str, np.ndarray]) -> None:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_string(f"{arch}.model_hint", "llama")
    w.add_uint32(f"{arch}.layer_count", len(tensors))
    for k, v in tensors.items():
        w.add_tensor(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_bad_files_are_refused(tmp_path: Path) -> None:
    lm = _lm()
    ok = np.ones(D, dtype=np.float32)
    cases = {
        "model.gguf": ("llama", {"direction.1": ok}, ArtifactError, "not a control vector"),
        "zero.gguf": ("controlvector", {"direction.0": ok}, LayerError, "direction.1"),
        "f16.gguf": ("controlvector", {"direction.1": ok.astype(np.float16)}, VectorError, "F16"),
        "2d.gguf": (
            "controlvector",
            {"direction.1": np.ones((2, D), np.float32)},
            VectorError,
            "1-D",
        ),
    }
    for name, (arch, tensors, err, msg) in cases.items():
        p = tmp_path / name
        _write_raw(p, arch, tensors)
        with pytest.raises(err, match=msg):
            import_control_vector(p, lm.info)
    wide = tmp_path / "wide.gguf"
    _write_raw(wide, "controlvector", {"direction.1": np.ones(D + 1, np.float32)})
    with pytest.raises(VectorError, match="width"):
        import_control_vector(wide, lm.info)
    deep = tmp_path / "deep.gguf"
    _write_raw(deep, "controlvector", {f"direction.{lm.info.n_layers}": ok})
    with pytest.raises(LayerError, match="beyond"):
        import_control_vector(deep, lm.info)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(ArtifactError, match="not a GGUF"):
        read_control_vector(junk)


def test_gguf_export_refuses_bad_layers_and_existing_file(tmp_path: Path) -> None:
    lm = _lm()
    d = _direction(lm, (2,))
    out = tmp_path / "cv.gguf"
    with pytest.raises(LayerError, match=r"llama\.cpp cannot steer"):
        write_control_vector(d, out, layers="0:3")
    with pytest.raises(LayerError):
        write_control_vector(d, out, layers="2:9")
    assert not out.exists()
    write_control_vector(d, out)
    with pytest.raises(SteerlabError, match="exists"):
        write_control_vector(d, out)
    bare = Direction(d.vectors, d.layers, {"site": "resid_pre"})
    with pytest.raises(ArtifactError, match="--model"):
        write_control_vector(bare, tmp_path / "bare.gguf")


def test_cli_export_and_import_gguf(tmp_path: Path, tiny_dir: Path) -> None:
    vec = _saved_vector(tmp_path, tiny_dir)
    out = tmp_path / "v.gguf"
    r = runner.invoke(
        app,
        ["export", "gguf", str(vec), "-o", str(out), "--layers", "2:4", "--coeff", "3", "--json"],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["llamacpp_layers"] == [1, 2]
    back = tmp_path / "back.safetensors"
    r = runner.invoke(app, ["import", "gguf", str(out), "--model", str(tiny_dir), "-o", str(back)])
    assert r.exit_code == 0, r.output
    d = Direction.load(back)
    assert d.layers == (1, 2) and d.site == "resid_post"
    # bad input: exit 2, one line, nothing written
    r = runner.invoke(app, ["export", "gguf", str(vec), "-o", str(out)])
    assert r.exit_code == 2 and "exists" in r.output
    bad = tmp_path / "bad.gguf"
    r = runner.invoke(app, ["export", "gguf", str(vec), "-o", str(bad), "--layers", "0:2"])
    assert r.exit_code == 2 and not bad.exists()
    notcv = tmp_path / "m.gguf"
    _write_raw(notcv, "llama", {"direction.1": np.ones(D, np.float32)})
    r = runner.invoke(
        app,
        ["import", "gguf", str(notcv), "-m", str(tiny_dir), "-o", str(tmp_path / "x.safetensors")],
    )
    assert r.exit_code == 2 and "not a control vector" in r.output
    assert not (tmp_path / "x.safetensors").exists()


# --- steering baked into a checkpoint ------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("site", ["resid_pre", "resid_post"])
def test_bake_steer_equals_runtime_steering(arch: str, site: str) -> None:
    lm = _lm(arch)
    v = torch.randn(D, generator=torch.Generator().manual_seed(1))
    snap = snapshot(lm.model)
    with Steer(v, layers=2, coeff=3.0, site=site).applied(lm):  # type: ignore[arg-type]
        want = _logits(lm.model, lm.tokenizer)
    with BakeSteer(v, 2, 3.0, site=site).applied(lm):  # type: ignore[arg-type]
        got = _logits(lm.model, lm.tokenizer)
        assert lm.model.config.steerlab_edit["kind"] == "bake_steer"
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert_identical(lm.model, snap)
    assert not hasattr(lm.model.config, "steerlab_edit")
    if arch == "llama":
        assert lm.model.config.mlp_bias is False
        assert lm.model.model.layers[1].mlp.down_proj.bias is None


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])
def test_bake_steer_refused_where_weights_cannot_hold_it(arch: str) -> None:
    lm = _lm(arch)
    snap = snapshot(lm.model)
    why = "no bias and its config has no flag" if arch == "qwen2" else "sandwich norms"
    with pytest.raises(SteerlabError, match=why), BakeSteer(torch.ones(D), 2).applied(lm):
        pass
    assert_identical(lm.model, snap)
    with (
        pytest.raises(LayerError, match="embedding output"),
        BakeSteer(torch.ones(D), 0).applied(_lm()),
    ):
        pass


def test_export_hf_reloads_with_plain_transformers(tmp_path: Path) -> None:
    lm = _lm()
    d = _direction(lm, (2,))
    out = tmp_path / "steered"
    snap = snapshot(lm.model)
    rec = export_hf(lm, d, 2, 4.0, out, PROMPTS)
    assert_identical(lm.model, snap)
    assert rec["check"]["passed"] and rec["check"]["max_abs_diff"] < 1e-4
    assert rec["check"]["effect_rel"] > 1e-3
    # plain transformers, fresh process state: no steerlab hook can be involved
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    assert plain.config.mlp_bias is True
    with Steer(d, layers=2, coeff=4.0).applied(lm):
        want = _logits(lm.model, lm.tokenizer)
    torch.testing.assert_close(_logits(plain, lm.tokenizer), want, rtol=0, atol=1e-4)
    card = (out / "README.md").read_text()
    assert "prompt tokens included" in card and "mlp_bias" in card
    assert json.loads((out / "steerlab_export.json").read_text())["edit"]["bias_of"].endswith(
        "layers.1.mlp.down_proj"
    )
    with pytest.raises(SteerlabError, match="exists"):
        export_hf(lm, d, 2, 4.0, out, PROMPTS)


def test_cli_export_hf_bad_input(tmp_path: Path, tiny_dir: Path) -> None:
    vec = _saved_vector(tmp_path, tiny_dir)
    out = tmp_path / "ok"
    args = ["export", "hf", str(vec), "--model", str(tiny_dir), "--layer", "2", "-o"]
    r = runner.invoke(app, [*args, str(out), "--coeff", "2", "--n-check", "2"])
    assert r.exit_code == 0, r.output
    assert (out / "model.safetensors").is_file() or any(out.glob("*.safetensors"))
    r = runner.invoke(app, [*args, str(out)])
    assert r.exit_code == 2 and "exists" in r.output
    nan = runner.invoke(app, [*args, str(tmp_path / "nan"), "--coeff", "nan"])
    assert nan.exit_code == 2 and not (tmp_path / "nan").exists()
    zero = runner.invoke(
        app,
        [
            "export",
            "hf",
            str(vec),
            "--model",
            str(tiny_dir),
            "--layer",
            "0",
            "-o",
            str(tmp_path / "z"),
        ],
    )
    assert zero.exit_code == 2 and "embedding output" in zero.output
    assert not (tmp_path / "z").exists()
