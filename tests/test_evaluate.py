"""The evaluator below the pipelines: the residual-norm rule, and fluency scored under the
untreated model whatever the treatment."""

from __future__ import annotations

import pytest
import torch
from conftest import EVAL_PROMPTS, make_model, make_tokenizer

from steerlab.behaviors.behavior import load_behavior
from steerlab.behaviors.scorers import make_scorer
from steerlab.compare.finetune import train_lora
from steerlab.engines.rows import continuation_nll_rows
from steerlab.evaluate.measure import Measurer
from steerlab.evaluate.norms import residual_norms
from steerlab.finetune import lora_config, target_modules
from steerlab.interventions import LoRA, NoOp, PromptPrefix
from steerlab.melbo.discover import source_norm
from steerlab.models.adapter import get_adapter
from steerlab.models.chat import encode
from steerlab.models.load import LoadedModel, model_info


def _tiny(seed: int = 0) -> LoadedModel:
    m = make_model("llama", seed=seed)
    ad = get_adapter(m)
    return LoadedModel(m, make_tokenizer(), ad, model_info(m, "tiny-llama", ad))


@torch.no_grad()
def test_residual_norms_leave_out_the_first_token_and_melbo_uses_the_same_rule() -> None:
    lm = _tiny()
    prompts = ["i am so happy today", "what a day", "tell me about your day"]
    got = residual_norms(lm, prompts, [1, 3], chat=False, batch_size=2)
    # oracle: each prompt alone (no padding), hidden_states[l] = resid_pre[l], tokens 1.. only
    for lay in (1, 3):
        norms = []
        for p in prompts:
            ids = encode(lm.tokenizer, [p], chat=False).input_ids
            hs = lm.model(input_ids=ids, output_hidden_states=True).hidden_states[lay][0]
            norms.append(hs.float().norm(dim=-1))  # (T,)
        want = float(torch.cat([n[1:] for n in norms]).median())
        assert abs(got[lay] - want) <= 1e-4 * want
        assert float(torch.cat(norms).median()) != want  # the rule is visible here
    assert source_norm(lm, prompts, 3, False) == residual_norms(lm, prompts, [3], chat=False)[3]
    # batching changes nothing but float rounding
    one = residual_norms(lm, EVAL_PROMPTS, [2], chat=True)[2]
    many = residual_norms(lm, EVAL_PROMPTS, [2], chat=True, batch_size=3)[2]
    assert abs(one - many) <= 1e-5 * one


def _ce(nll: list[tuple[float, int]]) -> list[float]:
    return [s / n for s, n in nll]


def test_fluency_is_the_base_models_with_a_lora_on_and_a_prompt_shown() -> None:
    # Defect: compare scored a LoRA's completions under the adapted model (peft is injected in
    # place), so a finetuned model graded its own fluency.
    lm = _tiny()
    prompts = ["tell me about your day", "what a day"]
    m = Measurer(lm, load_behavior("builtin:sentiment"), make_scorer("regex:happy"), 6)
    m.neutral = ["life is great"]
    base = m.measure([NoOp()], prompts, kl=True)[0]
    assert base["kl"] == 0.0
    pairs = [(p, "i am so happy today", "life is awful") for p in prompts]
    torch.manual_seed(0)
    with LoRA(config=lora_config(4, target_modules(lm.model)), trainable=True).applied(lm) as t:
        train_lora(
            t,
            t.extra["peft_model"],
            pairs,
            objective="sft",
            steps=8,
            lr=5e-2,
            batch=2,
            checkpoints=1,
        )
        grads = {n: p.requires_grad for n, p in lm.model.named_parameters()}
        got = m.measure([NoOp()], prompts, kl=True, view=t)[0]
        assert {n: p.requires_grad for n, p in lm.model.named_parameters()} == grads
        comps = got["completions"]
        assert comps != base["completions"]  # the adapter changes what is generated
        adapted = _ce(continuation_nll_rows(t, prompts, comps))
        assert got["kl"] > 0  # side effects are the treated model's
    plain = _ce(continuation_nll_rows(lm, prompts, comps))  # adapter unloaded: the base model
    assert got["ce"] == pytest.approx(plain, abs=1e-5)
    assert max(abs(a - b) for a, b in zip(got["ce"], adapted, strict=True)) > 0.1
    # a prompted view generates with its prefix; fluency is scored on the plain prompt
    prefix = PromptPrefix(prefix="i am so happy today and ")
    with prefix.applied(lm) as view:
        shown = m.measure([NoOp()], prompts, kl=False, view=view)[0]
        prefixed = _ce(continuation_nll_rows(view, prompts, shown["completions"]))
    plain = _ce(continuation_nll_rows(lm, prompts, shown["completions"]))
    assert shown["ce"] == pytest.approx(plain, abs=1e-5)
    assert shown["ce"] != pytest.approx(prefixed, abs=1e-3)
