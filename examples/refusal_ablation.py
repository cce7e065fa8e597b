"""Refusal ablation from Python: a harmful - harmless direction, ablated at run time and
orthogonalized into the weights, with the two checked against each other.

    python examples/refusal_ablation.py [MODEL]

The default model is the small smollm2-135m so the example is quick; the refusal pipeline's
default model is qwen2.5-coder-0.5b (``python examples/refusal_ablation.py
qwen2.5-coder-0.5b``), which refuses more. ``steerlab refusal`` does all of this with
direction selection, controls and intervals.
"""

import sys

import torch

import steerlab

model = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"
lm = steerlab.load_model(model)
layer = lm.info.n_layers // 2

harmful = steerlab.read_prompts("builtin:harmful:train")[:24]
harmless = steerlab.read_prompts("builtin:harmless:train")[:24]
d = steerlab.extract(lm, harmful, harmless, layers=[layer])

test = steerlab.read_prompts("builtin:harmful:test")[:8]
refusal = steerlab.make_scorer("refusal")


def refused(model: torch.nn.Module) -> float:
    replies = steerlab.generate(model, lm.tokenizer, test, max_new_tokens=24)
    return sum(refusal.score(test, replies)) / len(test)


print(f"refused, unsteered: {refused(lm.model):.2f}")
with steerlab.ablate(lm.model, d, layer=layer):  # removed at every layer, undone on exit
    print(f"refused, direction ablated: {refused(lm.model):.2f}")

# The same edit in the weights (a copy): what `steerlab refusal --export` saves.
edited = steerlab.orthogonalize(lm.model, d, layer=layer)
ids = lm.tokenizer(test[0], return_tensors="pt").input_ids
with torch.no_grad(), steerlab.ablate(lm.model, d, layer=layer):
    runtime = lm.model(ids).logits
with torch.no_grad():
    baked = edited(ids).logits
gap = (runtime - baked).abs().max().item()
print(f"orthogonalized weights vs runtime ablation: max |logit diff| {gap:.2e}")
assert gap < 1e-3 * runtime.abs().max().item()
