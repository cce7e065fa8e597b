"""The ``ab`` scorer's reading: P(the reply begins "(A") summed over the tokenizer's ways to
write it, checked against explicit forwards of every token sequence, on the tokenizers of the
built-in models (Qwen2.5's writes "(A" as one token; SmolLM2's as "(" then "A") driving a tiny
random model of that vocabulary."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from steerlab.evaluate.letters import letter_probs, letter_tokens
from steerlab.interventions import NoOp, Steer
from steerlab.models.adapter import get_adapter
from steerlab.models.chat import format_prompt
from steerlab.models.fetch import ensure_builtin
from steerlab.models.load import LoadedModel, model_info
from steerlab.models.registry import get_builtin

PROMPTS = ["Is the sky green? (A) yes (B) no", "Pick one. (A) tea (B) coffee", "Well?"]


def _lm(name: str) -> LoadedModel:
    spec = get_builtin(name)
    assert spec is not None
    tok = AutoTokenizer.from_pretrained(ensure_builtin(spec))
    cfg = AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    ad = get_adapter(m)
    return LoadedModel(m, tok, ad, model_info(m, name, ad))


def _next(lm: LoadedModel, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)


@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-coder-0.5b"])
def test_letter_probs_sum_both_tokenizations(name: str) -> None:
    lm = _lm(name)
    tok = lm.tokenizer
    ids = letter_tokens(tok)
    merged = ids.merged["A"] is not None
    assert merged == (name == "qwen2.5-coder-0.5b")  # the reason this module exists
    texts = [format_prompt(tok, p, chat=True) for p in PROMPTS]
    got = letter_probs(lm, texts).double()
    for row, text in zip(got, texts, strict=True):
        start = tok.encode(text, add_special_tokens=False)
        first = _next(lm, start)
        after = _next(lm, [*start, ids.paren])
        for j, c in enumerate("AB"):
            want = first[ids.paren] * after[ids.letter[c]]
            if merged:
                want = want + first[ids.merged[c]]
            assert float(row[j]) == pytest.approx(float(want), rel=1e-4, abs=1e-12)
    assert float(got.sum(1).max()) <= 1.0


def test_letter_probs_under_per_row_treatments() -> None:
    lm = _lm("qwen2.5-coder-0.5b")
    texts = [format_prompt(lm.tokenizer, p, chat=True) for p in PROMPTS]
    v = torch.randn(32, generator=torch.Generator().manual_seed(2)) * 4
    steer = Steer(v, layers=1)
    mixed = letter_probs(lm, texts, [steer, NoOp(), steer])
    with steer.applied(lm):
        alone = letter_probs(lm, texts)
    plain = letter_probs(lm, texts)
    same = {"rtol": 1e-4, "atol": 0.0}  # a random 151k vocabulary: each letter ~1e-5
    assert torch.allclose(mixed[[0, 2]], alone[[0, 2]], **same)
    assert torch.allclose(mixed[1], plain[1], **same)
    assert not torch.allclose(alone, plain, rtol=1e-2, atol=0.0)  # the treatment mattered
