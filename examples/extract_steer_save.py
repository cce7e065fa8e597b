"""Extract a happy - sad direction, steer with it, save it and load it back.

    python examples/extract_steer_save.py [OUT_DIR]

Runs on the built-in smollm2-135m (CPU, offline once cached) in seconds.
"""

import sys
import tempfile
from pathlib import Path

import steerlab

out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
lm = steerlab.load_model("smollm2-135m")

# One vector per layer: the difference of the mean residual streams at the last prompt token.
happy = steerlab.read_prompts("builtin:happy")[:8]
sad = steerlab.read_prompts("builtin:sad")[:8]
d = steerlab.extract(lm, happy, sad, method="mean_diff", layers="14:17")
print(f"direction: layers {d.layers}, width {d.d_model}")

prompt = ["Tell me about your day."]
plain = steerlab.generate(lm.model, lm.tokenizer, prompt, max_new_tokens=16)[0]
with steerlab.Steer(d, layers=15, coeff=8).applied(lm) as treated:
    steered = steerlab.generate(treated.model, treated.tokenizer, prompt, max_new_tokens=16)[0]
print("unsteered:", plain)
print("steered:  ", steered)
assert steered != plain  # the treatment changed the reply ...
after = steerlab.generate(lm.model, lm.tokenizer, prompt, max_new_tokens=16)[0]
assert after == plain  # ... and was undone on exit

# The artifact carries its metadata; loading checks it against the model.
path = out / "happy.safetensors"
d.save(path)
again = steerlab.Direction.load(path, model_info=lm.info)
assert again.layers == d.layers
print("saved", path)
