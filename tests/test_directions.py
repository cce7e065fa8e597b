"""Direction methods against closed forms and library oracles; the artifact's validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_model, make_tokenizer

from steerlab.directions import Direction, extract, fit_layer
from steerlab.errors import ArtifactError, DataError, LayerError, VectorError
from steerlab.models.adapter import get_adapter
from steerlab.models.load import LoadedModel, model_info


def _planted(
    n: int = 200, d: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u /= u.norm()
    base = torch.randn(n, d, generator=g)
    xp = base + 3 * u + 0.1 * torch.randn(n, d, generator=g)
    xn = base - 0 * u + 0.1 * torch.randn(n, d, generator=g)
    return xp, xn, u


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_mean_diff_is_difference_of_means() -> None:
    xp, xn, _ = _planted()
    v = fit_layer("mean_diff", xp.mean(0), xn.mean(0))
    torch.testing.assert_close(v, xp.mean(0) - xn.mean(0))


@pytest.mark.parametrize("method", ["pca", "logistic", "leace"])
def test_methods_find_planted_direction(method: str) -> None:
    xp, xn, u = _planted()
    v = fit_layer(method, xp.mean(0), xn.mean(0), xp, xn)
    assert _cos(v, u) > 0.95
    md = xp.mean(0) - xn.mean(0)
    # Scale convention: the projection of the mean difference onto the unit direction.
    assert float(v.norm()) == pytest.approx(float(md @ (v / v.norm())), rel=1e-5)


def test_logistic_matches_sklearn_oracle() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(1)
    xp = torch.randn(80, 8, generator=g) + torch.tensor([1.0] + [0.0] * 7)
    xn = torch.randn(80, 8, generator=g) * 2
    v = fit_layer("logistic", xp.mean(0), xn.mean(0), xp, xn)
    x = torch.cat([xp, xn]).double().numpy()
    y = np.r_[np.ones(80), np.zeros(80)]
    sc = StandardScaler().fit(x)
    w = LogisticRegression(max_iter=2000).fit(sc.transform(x), y).coef_[0] / sc.scale_
    assert abs(_cos(v.double(), torch.from_numpy(w))) > 0.9999


def test_leace_direction_erases_concept() -> None:
    from concept_erasure import LeaceEraser

    xp, xn, _ = _planted(d=8)
    v = fit_layer("leace", xp.mean(0), xn.mean(0), xp, xn)
    x = torch.cat([xp, xn]).double()
    z = torch.cat([torch.ones(len(xp)), torch.zeros(len(xn))]).double()
    eraser = LeaceEraser.fit(x, z)
    # The erasure's removed component lies along v.
    removed = x - eraser(x)
    r = (v / v.norm()).double()
    resid = removed - (removed @ r).unsqueeze(1) * r
    assert resid.norm() / removed.norm() < 1e-6


def test_pca_needs_pairs() -> None:
    xp, xn, _ = _planted()
    with pytest.raises(DataError, match="paired"):
        fit_layer("pca", xp.mean(0), xn.mean(0), xp, xn[:-1])


def _lm(arch: str = "llama") -> LoadedModel:
    model = make_model(arch)
    ad = get_adapter(model)
    return LoadedModel(model, make_tokenizer(), ad, model_info(model, f"tiny-{arch}", ad))


POS = ["i am so happy today", "what a joyful day", "life is great", "you look great"]
NEG = ["i am so sad today", "what a miserable day", "life is awful", "you look awful"]


@pytest.mark.parametrize("method", ["mean_diff", "pca", "logistic", "leace"])
def test_extract_records_how_it_was_made(method: str, tmp_path) -> None:
    lm = _lm()
    d = extract(lm, POS, NEG, method=method, layers="1:4", position="last")
    assert d.layers == (1, 2, 3) and d.vectors.shape == (3, 32)
    m = d.meta
    assert m["method"] == method and m["site"] == "resid_pre" and m["position"] == "last"
    assert m["model"]["model_id"] == "tiny-llama" and m["counts"] == {"positive": 4, "negative": 4}
    assert len(m["data_hash"]) == 16
    path = d.save(tmp_path / "d.safetensors")
    back = Direction.load(path, model_info=lm.info)
    assert torch.equal(back.vectors, d.vectors) and back.layers == d.layers
    assert back.meta["method"] == method and "steerlab_version" in back.meta
    assert back.meta["layer_convention"].startswith("resid_pre[l] = input of block l")


def test_extract_rejects_bad_sets() -> None:
    lm = _lm()
    with pytest.raises(DataError, match="empty"):
        extract(lm, [], NEG)
    with pytest.raises(DataError, match="unbalanced"):
        extract(lm, POS * 5, NEG[:1] * 2)
    with pytest.raises(DataError, match="same size"):
        extract(lm, POS, NEG[:3], method="pca")
    with pytest.raises(LayerError):
        extract(lm, POS, NEG, layers="9")


def test_artifact_validation(tmp_path) -> None:
    from safetensors.torch import save_file

    lm = _lm()
    d = extract(lm, POS, NEG, layers="2")
    p = d.save(tmp_path / "ok.safetensors")
    # Another architecture of the same width is refused unless strict=False.
    other = _lm("qwen2")
    with pytest.raises(ArtifactError, match="made for"):
        Direction.load(p, model_info=other.info)
    Direction.load(p, model_info=other.info, strict=False)
    # Width mismatch.
    wide = Direction(torch.ones(1, 64), (2,), {})
    with pytest.raises(VectorError, match="width"):
        wide.check_model(lm.info)
    # Corrupt and foreign files.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        Direction.load(bad)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.ones(2)}, str(foreign))
    with pytest.raises(ArtifactError, match="not a steerlab"):
        Direction.load(foreign)
    save_file(
        {"vectors": torch.ones(1, 4), "layers": torch.tensor([0])},
        str(foreign),
        metadata={"steerlab": json.dumps({"kind": "other"})},
    )
    with pytest.raises(ArtifactError, match="not a steerlab"):
        Direction.load(foreign)
    with pytest.raises(VectorError, match="NaN"):
        Direction(torch.tensor([[float("nan"), 0.0]]), (0,), {})
    with pytest.raises(LayerError, match="say which"):
        Direction(torch.ones(2, 4), (0, 1), {}).vector()
