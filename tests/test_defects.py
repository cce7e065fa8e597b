"""Regression tests for defects found in review. Each test names the defect it guards; each
fails on the code that had it."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import pytest
import torch
from conftest import (
    ARCHS,
    NON_SANDWICH,
    TINY_REFUSAL,
    all_hooks,
    assert_identical,
    make_model,
    make_tokenizer,
    snapshot,
)

import steerlab
from steerlab.capture import forward_kwargs
from steerlab.hooks import module_device, module_dtype, placed
from steerlab.interventions import LoRA, Orthogonalize
from steerlab.models.adapter import get_adapter
from steerlab.models.chat import encode
from steerlab.models.compat import cache_kwarg, cache_of, is_decode_step
from steerlab.models.fingerprint import weights_fingerprint
from steerlab.models.load import LoadedModel, model_info

PROMPTS = ["i am so happy today", "tell me about your day", "what a day"]


def _lm(arch: str = "llama", model: torch.nn.Module | None = None) -> LoadedModel:
    m = model if model is not None else make_model(arch)
    ad = get_adapter(m)
    return LoadedModel(m, make_tokenizer(), ad, model_info(m, f"tiny-{arch}", ad))


def _dir(d: int = 32, seed: int = 3) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _logits(model: torch.nn.Module, prompts: list[str] = PROMPTS) -> torch.Tensor:
    return model(**forward_kwargs(encode(make_tokenizer(), prompts))).logits


# ------------------------------------------------------------------ a. decode-step detection


@torch.no_grad()
def test_decode_step_detection_under_either_cache_name() -> None:
    # Defect: decode steps were recognised only by a ``past_key_values`` kwarg; transformers
    # 5.24 passes the cache as ``cache=``, so positions="generated" never steered anything.
    model = make_model("llama")
    ids = encode(make_tokenizer(), ["i am so happy today"]).input_ids
    out = model(input_ids=ids, use_cache=True)
    cache = cache_of(out)
    assert cache is not None and cache.get_seq_length() == ids.shape[1]
    one = ids[:, -1:]
    for name in ("cache", "past_key_values"):
        assert is_decode_step((), {"input_ids": one, name: cache}), name
        assert is_decode_step((one,), {name: cache}), name  # input ids passed positionally
        assert not is_decode_step((), {"input_ids": ids, name: cache}), name  # several tokens
    assert not is_decode_step((), {"input_ids": ids})  # a prompt
    assert not is_decode_step((), {"input_ids": one})  # one token, no cache: position 0
    empty = type(cache)(config=model.config) if _takes_config(cache) else type(cache)()
    assert not is_decode_step((), {"input_ids": one, cache_kwarg(model): empty})
    assert not is_decode_step((), {"input_ids": one, "cache_position": torch.tensor([0])})
    assert is_decode_step((), {"input_ids": one, "cache_position": torch.tensor([5])})


def _takes_config(cache: object) -> bool:
    import inspect

    return "config" in inspect.signature(type(cache).__init__).parameters


def test_decode_steps_seen_by_the_model_during_generate() -> None:
    # Defect (same): what the model's forward really receives from generate() must read as
    # one prompt forward followed by decode steps, whatever the kwarg is called.
    from steerlab.generation import generate

    model = make_model("llama")
    seen: list[bool] = []
    h = model.register_forward_pre_hook(
        lambda _m, a, kw: seen.append(is_decode_step(a, kw)), with_kwargs=True
    )
    try:
        generate(model, make_tokenizer(), PROMPTS, max_new_tokens=4)
    finally:
        h.remove()
    assert seen == [False, True, True, True]


# ------------------------------------------------------------------ b. placement


def test_placed_uses_the_modules_dtype() -> None:
    # Defect: vectors stayed float32 on bf16 modules (promoting the residual to float32).
    lin = torch.nn.Linear(4, 4).to(torch.bfloat16)
    v = placed(torch.ones(4), lin)
    assert v.dtype == torch.bfloat16 and v.device == torch.device("cpu")
    assert module_dtype(lin) == torch.bfloat16


def test_placed_uses_the_modules_device() -> None:
    # Defect: vectors were placed on the model's first device, not each hooked module's.
    with torch.device("meta"):
        lin = torch.nn.Linear(4, 4)
    v = placed(torch.ones(4), lin)
    assert v.device.type == "meta" and module_device(lin).type == "meta"


def test_placed_prefers_the_accelerate_execution_device() -> None:
    # Defect: offloaded modules (weights on meta, computed on another device) got their
    # vector on "meta"; accelerate's execution device is where the hook's input arrives.
    with torch.device("meta"):
        lin = torch.nn.Linear(4, 4)
    lin._hf_hook = types.SimpleNamespace(execution_device=torch.device("cpu"))
    v = placed(torch.ones(4, dtype=torch.float64), lin)
    assert v.device == torch.device("cpu") and v.dtype == torch.float32
    lin._hf_hook = types.SimpleNamespace(execution_device="cpu")  # accelerate may give a str
    assert module_device(lin) == torch.device("cpu")


def test_steering_a_bfloat16_model_keeps_bfloat16() -> None:
    model = make_model("llama").to(torch.bfloat16)
    seen: list[torch.dtype] = []
    h = model.model.layers[2].register_forward_pre_hook(
        lambda _m, a, kw: seen.append((a[0] if a else kw["hidden_states"]).dtype),
        with_kwargs=True,
    )
    try:
        with steerlab.steer(model, _dir(), layers=1, coeff=2.0), steerlab.ablate(model, _dir()):
            logits = _logits(model)
    finally:
        h.remove()
    assert seen == [torch.bfloat16] and logits.dtype == torch.bfloat16


# ------------------------------------------------------------------ c. Orthogonalize intervention


@pytest.mark.parametrize("arch", NON_SANDWICH)
def test_orthogonalize_intervention_equals_ablation_then_restores(arch: str) -> None:
    # Defect: the in-place edit was not undone exactly (re-orthogonalizing is not invertible
    # in floating point) and left the embeddings untied.
    lm = _lm(arch)
    model, v = lm.model, _dir()
    snap = snapshot(model)
    head = model.get_output_embeddings().weight
    tied = head is model.get_input_embeddings().weight
    with steerlab.ablate(model, v):
        ablated = _logits(model)
    with Orthogonalize(v).applied(lm) as edited:
        assert edited.model is model  # in place: no second copy
        assert (_logits(model) - ablated).abs().max() < 1e-4
        assert all_hooks(model) == 0
    assert_identical(model, snap)
    assert model.get_output_embeddings().weight is head
    assert (model.get_input_embeddings().weight is head) == tied
    assert model.config.tie_word_embeddings == tied
    assert not hasattr(model.config, "steerlab_edit")


class Boom(Exception):
    pass


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_orthogonalize_intervention_restores_on_error(arch: str, tmp_path: Path) -> None:
    lm = _lm(arch)
    model = lm.model
    snap = snapshot(model)
    head, emb = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    tie = model.config.tie_word_embeddings
    ref = _logits(model)
    with pytest.raises(Boom), Orthogonalize(_dir(), spill_dir=tmp_path).applied(lm):
        assert not torch.equal(_logits(model), ref)
        assert model.config.tie_word_embeddings is False
        raise Boom
    assert_identical(model, snap)
    assert torch.equal(_logits(model), ref)
    assert model.get_output_embeddings().weight is head
    assert model.get_input_embeddings().weight is emb
    assert model.config.tie_word_embeddings == tie
    assert not hasattr(model.config, "steerlab_edit")
    assert list(tmp_path.iterdir()) == []  # the spill file is gone


def test_orthogonalize_intervention_keeps_an_earlier_edit_record() -> None:
    lm = _lm("gemma")  # tied embeddings
    lm.model.config.steerlab_edit = {"kind": "earlier"}
    with Orthogonalize(_dir()).applied(lm) as m:
        assert m.model.config.steerlab_edit["kind"] == "orthogonalize"
        assert m.model.get_output_embeddings().weight is not m.model.get_input_embeddings().weight
    assert lm.model.config.steerlab_edit == {"kind": "earlier"}
    assert lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight


# ------------------------------------------------------------------ d. LoRA intervention


def _peft_left(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m).__module__.startswith("peft")]


def test_lora_error_mid_training_leaves_the_model_as_it_was() -> None:
    # Defect: an exception (or Ctrl-C) during training left peft layers in the caller's model,
    # base weights frozen, and peft's attributes on it.
    from peft import LoraConfig

    lm = _lm("llama")
    model = lm.model
    model.model.layers[0].requires_grad_(False)  # unusual state: must come back as it was
    model.model.layers[1].train()
    snap = snapshot(model)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    attrs = set(vars(model))
    cfg_attrs = set(vars(model.config))
    ref = _logits(model)
    batch = encode(make_tokenizer(), PROMPTS)
    lora = LoRA(config=LoraConfig(r=4, target_modules="all-linear"), trainable=True)
    with pytest.raises(Boom), lora.applied(lm) as treated:
        assert _peft_left(model)
        params = [p for p in treated.model.parameters() if p.requires_grad]
        assert params and all("lora" in n for n, p in model.named_parameters() if p.requires_grad)
        opt = torch.optim.SGD(params, lr=1.0)
        treated.model.train()
        out = treated.model(**forward_kwargs(batch), labels=batch.input_ids)
        out.loss.backward()
        opt.step()
        assert not torch.equal(_logits(model), ref)  # the adapter is in effect and trained
        raise Boom
    assert _peft_left(model) == []
    assert_identical(model, snap)
    assert torch.equal(_logits(model), ref)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert set(vars(model)) == attrs
    assert set(vars(model.config)) == cfg_attrs


# ------------------------------------------------------------------ e. weights-keyed cache

MODEL_STEPS = {"filter", "candidates", "baseline_val", "selection", "coefficient", "evaluation"}


class CountingBar:
    """A ``progress`` callable that records how far each bar was advanced."""

    def __init__(self) -> None:
        self.bars: list[dict[str, object]] = []

    def __call__(self, desc: str, total: int | None):
        from contextlib import contextmanager

        rec: dict[str, object] = {"desc": desc, "total": total, "n": 0}
        self.bars.append(rec)

        @contextmanager
        def ctx():
            def advance(n: int) -> None:
                rec["n"] = int(rec["n"]) + n  # type: ignore[call-overload]

            yield advance

        return ctx()

    def overruns(self) -> list[dict[str, object]]:
        return [b for b in self.bars if b["total"] is not None and b["n"] > b["total"]]  # type: ignore[operator]


def test_weights_change_invalidates_the_cache(tmp_path: Path) -> None:
    # Defect: the cache was keyed on the model's name and config only, so a model retrained
    # in place was served the old model's filter, candidates and selection.
    from steerlab.refusal import RefusalConfig, run_refusal

    cfg = RefusalConfig(**TINY_REFUSAL)  # type: ignore[arg-type]
    lm = _lm("llama")
    out = tmp_path / "run"
    bars = CountingBar()
    first = run_refusal(lm, cfg, out, progress=bars)
    assert first.resumed_steps == []
    # g. every file was written through a temporary name and a rename: none is left behind
    assert [p for p in out.rglob("*") if ".tmp" in p.name] == []
    # l. no progress bar was advanced past its total
    assert bars.bars and bars.overruns() == []
    again = run_refusal(lm, cfg, out)
    assert set(again.resumed_steps or []) >= MODEL_STEPS  # unchanged weights: reused
    assert again.selected == first.selected
    with torch.no_grad():
        lm.model.model.layers[1].mlp.down_proj.weight += 0.01
    changed = run_refusal(lm, cfg, out)
    assert set(changed.resumed_steps or []).isdisjoint(MODEL_STEPS), changed.resumed_steps


def test_weights_fingerprint() -> None:
    a, b = make_model("llama"), make_model("llama")
    fa = weights_fingerprint(a)
    assert fa == weights_fingerprint(b)
    assert fa != weights_fingerprint(make_model("llama", seed=1))
    tensors = {**dict(a.named_parameters()), **dict(a.named_buffers())}
    with torch.no_grad():
        for name, t in tensors.items():
            if not t.is_floating_point() or t.numel() == 0:
                continue
            # One value, one unit in the last place, at the far end (beyond the strided sample).
            flat = t.view(-1)
            old = flat[-1].clone()
            flat[-1] = torch.nextafter(old, old + 1)
            assert weights_fingerprint(a) != fa, name
            flat[-1] = old
            assert weights_fingerprint(a) == fa, name


# ------------------------------------------------------------------ g. failed runs still report


def test_failure_after_selection_writes_a_failed_report(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defect: a step failing after selection wrote no report (the run's work was invisible)
    # and, in another version, the CLI printed a traceback.
    from typer.testing import CliRunner

    import steerlab.refusal.pipeline as pipeline
    from steerlab.cli import app
    from steerlab.errors import SteerlabError

    def boom(*_a: object, **_k: object) -> None:
        raise SteerlabError("boom")

    monkeypatch.setattr(pipeline, "evaluation", boom)
    out = tmp_path / "run"
    args = ["refusal", "--model", str(tiny_dir), "--out", str(out), "-q", "--no-filter"]
    args += ["--n-train", "16", "--n-val", "8", "--n-eval", "8", "--keep", "2"]
    args += ["--positions", "2", "--max-new-tokens", "3"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: boom")
    assert "report:" in lines[0] and str(out / "report.html") in lines[0]
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "failed"
    assert rep["failure"]["step"] == "evaluation" and rep["failure"]["error"] == "boom"
    assert rep["selected"] and {"layer", "position"} <= rep["selected"].keys()
    assert (out / "report.html").is_file() and (out / "direction.safetensors").is_file()
    assert [p for p in out.rglob("*") if ".tmp" in p.name] == []


# ------------------------------------------------------------------ h. export check


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_export_logit_check(dtype: torch.dtype) -> None:
    # Defect: the check held bfloat16 exports to a float32 tolerance, so a correct bf16 export
    # was never published.
    from steerlab.refusal.export import logit_check, tolerance

    lm = _lm("llama", make_model("llama").to(dtype))
    v, wrong = _dir(seed=1), _dir(seed=2)
    prompts = [*PROMPTS, "life is great"]
    good = logit_check(lm, v, steerlab.orthogonalize(lm.model, v), prompts, None)
    assert good["passed"] is True, good
    assert good["dtype"] == str(dtype).replace("torch.", "")
    assert good["tolerance_rel"] == tolerance(dtype)
    bad = logit_check(lm, v, steerlab.orthogonalize(lm.model, wrong), prompts, None)
    assert bad["passed"] is False, bad
    assert bad["max_rel_diff"] > 10 * good["max_rel_diff"]
    # The unchanged model is not a passing export either: ablation has an effect here.
    plain = logit_check(lm, v, lm.model, prompts, None)
    assert plain["passed"] is False and plain["ablation_effect_rel"] > tolerance(dtype)


def test_tolerance_grows_with_coarser_dtypes() -> None:
    from steerlab.refusal.export import tolerance

    assert tolerance(torch.float64) < tolerance(torch.float32)
    assert tolerance(torch.float32) < tolerance(torch.float16) <= tolerance(torch.bfloat16)
    assert all(math.isfinite(tolerance(d)) for d in (torch.float32, torch.bfloat16))


# ------------------------------------------------------------------ l. progress bars


@pytest.mark.parametrize("screen", ["layers", "all"])
@pytest.mark.parametrize(("keep", "n_pos"), [(1, 3), (2, 3), (9, 3), (2, 1)])
def test_selection_bars_end_at_their_totals(
    screen: str, keep: int, n_pos: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defect: the screening bar's total left out the extra positions screened for the best
    # layers, so it ended at 31/27.
    from contextlib import nullcontext

    from steerlab.refusal import RefusalConfig
    from steerlab.refusal import select as sel
    from steerlab.runs import RunCache

    class Fake:  # what is measured does not matter here, only how often
        def __init__(self, v: torch.Tensor, **_k: object) -> None:
            self.v = v

        def applied(self, lm: object) -> object:
            return nullcontext(lm)

    def fake_scores(_lm, prompts, _ids, _cfg):
        return torch.zeros(len(prompts), 3), torch.rand(len(prompts))

    monkeypatch.setattr(sel, "Ablate", Fake)
    monkeypatch.setattr(sel, "Steer", Fake)
    monkeypatch.setattr(sel, "_scores", fake_scores)
    monkeypatch.setattr(sel, "kl_divergence", lambda _a, _b: 1.0)  # fails KL: 3 rounds run
    diffs = torch.randn(10, n_pos, 32, generator=torch.Generator().manual_seed(0)).double()
    cfg = RefusalConfig(screen=screen, keep=keep, early_prompts=2, prune_last=0.2, kl_max=0.1)
    cache = RunCache(tmp_path)
    for _attempt in ("fresh", "resumed from the journal"):
        bars = CountingBar()
        cands = sel.score_candidates(
            None,  # type: ignore[arg-type]
            diffs,
            ["h"] * 4,
            ["l"] * 4,
            [0],
            cfg,
            cache.journal("selection", ["k"]),
            base_harmless_lp=torch.zeros(4, 3),
            bar=bars,
        )
        assert bars.bars[0]["desc"] == "selection: screening candidates"
        assert len(bars.bars) == 1 + min(3, -(-sum(c["screen_bypass"] is not None
                                                  for c in cands) // keep))  # fmt: skip
        for b in bars.bars:
            assert b["n"] == b["total"], b
