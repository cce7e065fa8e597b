"""The refusal pipeline end to end on a tiny random model (structure, resume, export, errors).

Behaviour on a model that really refuses (qwen2.5-coder-0.5b) is measured by
``benchmarks/bench_refusal.py`` and the slow test in ``test_refusal_slow.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_REFUSAL, make_model, make_tokenizer
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.directions import Direction
from steerlab.errors import DataError, SteerlabError
from steerlab.metrics import (
    refusal_scores,
    refusal_token_ids,
    strict_refusal,
    substring_refusal,
)
from steerlab.models.adapter import get_adapter
from steerlab.models.load import LoadedModel, model_info
from steerlab.refusal import RefusalConfig, RefusalReport, run_refusal
from steerlab.runs import _finite

CFG = RefusalConfig(**TINY_REFUSAL)  # type: ignore[arg-type]
# report.json as other scripts read it: its keys, in order (RefusalReport.to_dict is the contract)
REPORT_KEYS = [
    "kind",
    "status",
    "failure",
    "model",
    "identity",
    "config",
    "selected",
    "directions",
    "selection_rule",
    "candidates",
    "coefficient_scan",
    "baseline_scores",
    "variants",
    "verdicts",
    "disagreement",
    "examples",
    "filter",
    "export",
    "timings",
    "evaluation_generation",
    "compute_seconds",
    "resumed_steps",
    "notes",
    "steerlab_version",
]
VARIANT_KEYS = ["kl_harmless", "ce_loss_harmless", "ce_loss_completions", "intervention"] + [
    f"{w}_{k}"
    for w in ("harmful", "harmless")
    for k in (
        "score_mean",
        "score_ci",
        "refusal_rate",
        "refusal_ci",
        "refusal_k",
        "n",
        "refusal_rate_strict",
        "refusal_ci_strict",
        "refusal_k_strict",
        "disagreement",
    )
]


def _lm(chat: bool = True) -> LoadedModel:
    m = make_model("llama")
    ad = get_adapter(m)
    return LoadedModel(m, make_tokenizer(chat=chat), ad, model_info(m, "tiny", ad))


def test_refusal_measures() -> None:
    assert substring_refusal("As an AI language model, I don't have feelings, but I can write")
    assert not strict_refusal("As an AI language model, I don't have feelings, but I can write")
    assert strict_refusal("I'm sorry, but I can't assist with that.")
    assert strict_refusal("As an AI, I cannot help with this request.")
    assert not strict_refusal("Sure! Here is a poem. I cannot wait to read it.")
    assert not substring_refusal("Sure, here is how to bake bread.")
    lp = torch.log_softmax(torch.tensor([[5.0, 0.0, 0.0], [-5.0, 0.0, 0.0]]), -1)
    s = refusal_scores(lp, [0])
    assert s[0] > 0 > s[1]


def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    from steerlab.models.fetch import ensure_builtin
    from steerlab.models.registry import get_builtin

    return AutoTokenizer.from_pretrained(ensure_builtin(get_builtin("smollm2-135m")))


def test_refusal_token_ids_as_the_tokenizer_spells_them() -> None:
    """The first token of each refusal opener, with and without a leading space, as a real BPE
    tokenizer spells it (" I" and "I" are different tokens there); a distribution that puts
    its mass on them scores as a refusal, one that puts it elsewhere does not."""
    tok = _smollm2_tokenizer()
    ids = refusal_token_ids(tok)
    first = {w: tok.encode(w, add_special_tokens=False)[0] for w in ("I", " I", "Sorry", " As")}
    assert first["I"] != first[" I"]
    assert set(first.values()) <= set(ids)
    sure = tok.encode(" Sure", add_special_tokens=False)[0]
    assert sure not in ids
    # Every id decodes to the start of an opener.
    openers = ("I", "As", "Sorry", "Unfortunately", "No")
    assert all(
        tok.decode([i]).strip() and any(o.startswith(tok.decode([i]).strip()) for o in openers)
        for i in ids
    )
    v = len(tok)
    refusing = torch.full((1, v), -30.0)
    refusing[0, first[" I"]] = 0.0
    refusing[0, first["Sorry"]] = -0.5
    complying = torch.full((1, v), -30.0)
    complying[0, sure] = 0.0
    scores = refusal_scores(torch.log_softmax(torch.cat([refusing, complying]), -1), ids)
    assert scores[0] > 5 and scores[1] < -5


def test_refusal_token_ids_skip_the_unknown_token() -> None:
    # A tokenizer that cannot spell "I" or "Sorry" maps them to [UNK]: its probability is no
    # refusal. The tiny tokenizer spells "I", "Sorry" and "As" and nothing else of the list.
    tok = make_tokenizer()
    ids = refusal_token_ids(tok)
    assert tok.unk_token_id not in ids
    assert ids == sorted(tok.convert_tokens_to_ids(["I", "Sorry", "As"]))
    no_openers = make_tokenizer(openers=())
    with pytest.raises(DataError, match="none of the refusal openers"):
        refusal_token_ids(no_openers)


def test_pipeline_end_to_end_and_resume(tmp_path: Path) -> None:
    lm = _lm()
    snap = {k: v.clone() for k, v in lm.model.state_dict().items()}
    out, exp = tmp_path / "run", tmp_path / "export"
    rep = run_refusal(lm, CFG, out, export_dir=exp)
    for name in ("report.json", "report.html", "direction.safetensors"):
        assert (out / name).is_file()
    saved = json.loads((out / "report.json").read_text())
    # The returned result is what report.json holds, and reads back into the same result.
    assert isinstance(rep, RefusalReport)
    assert json.loads(json.dumps(_finite(rep.to_dict()))) == saved
    assert RefusalReport.from_dict(saved).to_dict() == saved
    assert list(saved) == REPORT_KEYS
    assert list(saved["variants"]["ablation"]) == VARIANT_KEYS
    assert list(saved["verdicts"][0]) == ["check", "level", "text"]
    assert list(saved["candidates"][0]) == [
        "layer",
        "position",
        "bypass_score",
        "induce_score",
        "kl_score",
        "screen_bypass",
        "screen_kl",
        "status",
    ]
    assert set(saved["variants"]) == {
        "baseline",
        "ablation",
        "subtraction",
        "addition",
        "clamp",
        "orthogonalized",
        "random",
    }
    for m in saved["variants"].values():
        assert {
            "harmful_refusal_rate",
            "harmful_refusal_ci",
            "harmless_refusal_rate",
            "harmless_refusal_ci",
            "kl_harmless",
            "ce_loss_harmless",
        } <= m.keys()
    assert saved["variants"]["baseline"]["kl_harmless"] == pytest.approx(0.0, abs=1e-9)
    sel = saved["selected"]
    assert {"layer", "position", "bypass_score", "induce_score", "kl_score"} <= sel.keys()
    n_layers = lm.info.n_layers
    assert sel["layer"] < int(n_layers * 0.8)
    statuses = {c["status"] for c in saved["candidates"]}
    assert "selected" in statuses and "pruned_layer" in statuses
    assert set(saved["timings"]) >= {"filter", "candidates", "selection", "evaluation", "total"}
    d = Direction.load(out / "direction.safetensors", model_info=lm.info)
    assert d.layers == (sel["layer"],) and d.meta["position"] == sel["position"]
    # The exported checkpoint loads with stock transformers and was verified.
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(exp)
    assert (exp / "README.md").read_text().startswith("# tiny with the refusal direction removed")
    assert rep.export is not None and rep.export["max_logit_diff_vs_ablation"] < 1e-4
    # The caller's model is untouched.
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, snap[k])
    # A second run reuses every cached step and gives the same selection.
    rep2 = run_refusal(lm, CFG, out)
    reused = {"filter", "candidates", "baseline_val", "coefficient", "selection", "evaluation"}
    assert reused <= set(rep2.resumed_steps or [])
    assert rep2.selected == rep.selected
    assert rep2.to_dict()["variants"] == json.loads(json.dumps(rep.to_dict()["variants"]))
    # Baseline completions are journaled apart from the direction, for reuse by other rules.
    base = next((out / "cache").glob("evaluation-baseline-*.jsonl")).read_text().splitlines()
    assert [json.loads(x)["id"] for x in base] == ["eval:baseline"]


def test_interrupted_sweep_resumes_from_journal(tmp_path: Path, monkeypatch) -> None:
    import steerlab.refusal.select as sel

    lm = _lm()
    calls = {"n": 0}
    real = sel._scores

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sel, "_scores", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_refusal(lm, CFG, tmp_path)
    journal = next((tmp_path / "cache").glob("selection-*.jsonl"))
    first = journal.read_text().splitlines()
    assert len(first) >= 3  # candidates finished before the interrupt are kept
    calls["n"] = -10_000
    run_refusal(lm, CFG, tmp_path)
    lines = journal.read_text().splitlines()
    assert lines[: len(first)] == first  # resumed: nothing finished was recomputed
    assert len(lines) > len(first) and len({json.loads(x)["id"] for x in lines}) == len(lines)
    # Screening needs 2 forwards per live candidate with a nonzero direction; the resumed run
    # only did the ones that were missing.
    assert calls["n"] + 10_000 < 2 * len(lines)


def test_bad_inputs(tmp_path: Path) -> None:
    lm = _lm()
    few = tmp_path / "few.txt"
    few.write_text("i am so happy\nwhat a day\n")
    with pytest.raises(DataError, match="at least 8"):
        run_refusal(lm, CFG.with_overrides(harmful=str(few)), tmp_path / "a")
    with pytest.raises(DataError, match="no chat template"):
        run_refusal(_lm(chat=False), CFG, tmp_path / "b")
    exists = tmp_path / "exists"
    exists.mkdir()
    (exists / "notes.txt").write_text("mine")
    with pytest.raises(SteerlabError, match="--overwrite"):
        run_refusal(lm, CFG, tmp_path / "c", export_dir=exists)
    # --overwrite deletes only what steerlab made: a user's directory is refused, untouched.
    with pytest.raises(SteerlabError, match="not made by steerlab"):
        run_refusal(lm, CFG, tmp_path / "c", export_dir=exists, overwrite=True)
    assert (exists / "notes.txt").read_text() == "mine"
    for bad in (tmp_path / "c", tmp_path, tmp_path / "c" / "cache" / "x"):
        with pytest.raises(SteerlabError, match=r"contain|inside the cache"):
            run_refusal(lm, CFG, tmp_path / "c", export_dir=bad, overwrite=True)
    assert not (tmp_path / "c").exists()
    for rule in ("score", "argmax"):
        with pytest.raises(DataError, match="may not refuse"):
            run_refusal(
                lm, CFG.with_overrides(filter_train=True, filter_rule=rule), tmp_path / f"d-{rule}"
            )


def test_cli_refusal_errors(tmp_path: Path, tiny_dir: Path) -> None:
    def invoke(*args: object):
        return CliRunner().invoke(app, ["refusal", "--model", str(tiny_dir), *map(str, args)])

    used = tmp_path / "used"
    used.mkdir()
    (used / "x.txt").write_text("keep me")
    r = invoke("--out", tmp_path / "o", "--export", used, "--quiet")
    assert r.exit_code == 2 and "--overwrite" in r.output and "Traceback" not in r.output
    r = invoke("--out", tmp_path / "o", "--export", tmp_path, "--overwrite")
    assert r.exit_code == 2 and "would contain" in r.output
    (tmp_path / "file").write_text("")
    r = invoke("--out", tmp_path / "file")
    assert r.exit_code == 2 and "not a directory" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(app, ["refusal", "--model", str(tiny_dir), "--coeff", "lots"])
    assert r.exit_code == 2 and "--coeff" in r.output
    r = CliRunner().invoke(app, ["refusal", "--model", str(tiny_dir), "--filter-rule", "vibes"])
    assert r.exit_code == 2 and "--filter-rule" in r.output


def test_generation_first_logprobs_equal_a_forward() -> None:
    from steerlab.generation import generate, last_token_logprobs

    lm = _lm()
    prompts = ["i am so happy today", "tell me about your day", "what a day"]
    texts, lp = generate(lm.model, lm.tokenizer, prompts, max_new_tokens=2, first_logprobs=True)
    assert len(texts) == 3
    ref = last_token_logprobs(lm.model, lm.tokenizer, prompts)
    torch.testing.assert_close(lp, ref, rtol=1e-4, atol=1e-4)


def test_train_and_val_draws_do_not_depend_on_the_eval_sets(tmp_path: Path) -> None:
    """The same train/val prompts whatever evaluation set is given (apart from prompts the
    evaluation set takes out), so runs on different test sets select on the same data."""
    from steerlab.refusal.data import load_data

    words = ["i am", "so happy", "today", "tell me", "about your day", "what a", "great life"]
    sets = {}
    for name in ("harmful", "harmless", "harmful_val", "harmless_val", "ev_small", "ev_big"):
        texts = [
            f"{name} {a} {b} {k}"
            for k, (a, b) in enumerate(zip(words, words[1:] * 9, strict=False))
        ]
        texts += [f"{name} {w} {k}" for k, w in enumerate(words * (6 if name == "ev_big" else 3))]
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(texts))
        sets[name] = str(p)
    base = dict(
        harmful=sets["harmful"],
        harmless=sets["harmless"],
        harmful_val=sets["harmful_val"],
        harmless_val=sets["harmless_val"],
        n_train=10,
        n_val=8,
    )
    tok = make_tokenizer()
    small = load_data(
        RefusalConfig(
            **base, eval_harmful=sets["ev_small"], eval_harmless=sets["ev_small"], n_eval=8
        ),
        tok,
    )
    big = load_data(
        RefusalConfig(**base, eval_harmful=sets["ev_big"], eval_harmless=sets["ev_big"], n_eval=20),
        tok,
    )
    assert len(small.eval_harmful) == 8 and len(big.eval_harmful) == 20
    for name in ("harmful", "harmless", "harmful_val", "harmless_val"):
        assert getattr(small, name) == getattr(big, name), name
    again = load_data(
        RefusalConfig(
            **base, eval_harmful=sets["ev_small"], eval_harmless=sets["ev_small"], n_eval=8, seed=1
        ),
        tok,
    )
    assert again.harmful_val != small.harmful_val  # the seed still matters


def test_screen_keeps_candidates_with_noisy_kl(tmp_path: Path, monkeypatch) -> None:
    """A candidate whose few-prompt screen KL is a little over the bound (but whose full-val
    KL passes) is still fully scored and can win; the bound itself is applied to full scores."""
    import contextlib

    from steerlab.refusal import select as sel
    from steerlab.runs import RunCache

    # layer -> (screen bypass, screen KL, full bypass, full KL)
    truth = {0: (-1.0, 0.05, -1.0, 0.05), 1: (-5.0, 0.15, -5.0, 0.08), 2: (-6.0, 0.5, -6.0, 0.4)}
    now: dict[str, int | None] = {"layer": None, "last": None}

    class FakeAblate:
        def __init__(self, v):
            self.v = v

        @contextlib.contextmanager
        def applied(self, lm):
            now["layer"] = now["last"] = int(self.v.abs().argmax())
            try:
                yield lm
            finally:
                now["layer"] = None

    class FakeSteer:
        def __init__(self, *a, **k):
            pass

        def applied(self, lm):
            return contextlib.nullcontext(lm)

    def fake_scores(_lm, prompts, _ids, _cfg):
        full = len(prompts) > 2
        lay = now["layer"]
        bypass = 0.0 if lay is None else truth[lay][2 if full else 0]
        return torch.zeros(len(prompts), 1), torch.full((len(prompts),), bypass)

    def fake_kl(_base, lp):  # called just after the ablation it measures
        lay = now["last"]
        return truth[lay][3 if lp.shape[0] > 2 else 1]

    monkeypatch.setattr(sel, "Ablate", FakeAblate)
    monkeypatch.setattr(sel, "Steer", FakeSteer)
    monkeypatch.setattr(sel, "_scores", fake_scores)
    monkeypatch.setattr(sel, "kl_divergence", fake_kl)
    diffs = torch.eye(3).view(3, 1, 3).double()
    cfg = RefusalConfig(kl_max=0.1, early_prompts=2, keep=1, screen="all", prune_last=0.0)
    journal = RunCache(tmp_path).journal("sel", ["t"])
    cands = sel.score_candidates(
        _lm(), diffs, ["h"] * 4, ["l"] * 4, [0], cfg, journal, base_harmless_lp=torch.zeros(4, 1)
    )
    best, _ = sel.select(cands, cfg)
    assert best["layer"] == 1  # screen KL 0.15 <= 2 x 0.1, full KL 0.08 passes
    assert next(c for c in cands if c["layer"] == 2)["bypass_score"] is None  # 0.5: not scored


def test_resumed_evaluation_measures_kl_against_the_unchanged_model(tmp_path: Path) -> None:
    """A baseline read back from its journal is recomputed outside every intervention: the
    KL of each variant is the same on a resumed (or re-ranked) run as on the first."""
    lm = _lm()
    first = run_refusal(lm, CFG, tmp_path)
    for j in (tmp_path / "cache").glob("evaluation-*.jsonl"):
        if not j.name.startswith("evaluation-baseline-"):
            j.unlink()  # as after an interrupt that followed the baseline
    again = run_refusal(lm, CFG, tmp_path)
    for name, m in first.variants.items():
        assert again.variants[name].kl_harmless == pytest.approx(
            m.kl_harmless, rel=1e-6, abs=1e-9
        ), name
    assert (first.variants["ablation"].kl_harmless or 0) > 0


def test_failed_evaluation_leaves_no_checkpoint_behind(tmp_path: Path, monkeypatch) -> None:
    """The checked export waits beside its destination during the evaluation; a failure
    there (or Ctrl-C) removes it instead of leaving a model-sized directory."""
    import steerlab.refusal.pipeline as pipeline

    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "evaluation", boom)
    with pytest.raises(KeyboardInterrupt):
        run_refusal(_lm(), CFG, tmp_path / "run", export_dir=tmp_path / "export")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
