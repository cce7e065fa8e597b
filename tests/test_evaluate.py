"""The evaluator below the pipelines: the residual-norm rule, and fluency scored under the
untreated model whatever the treatment."""

from __future__ import annotations

import torch
from conftest import EVAL_PROMPTS, make_model, make_tokenizer

from steerlab.evaluate.norms import residual_norms
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
