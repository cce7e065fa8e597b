"""A behaviour of your own, written as a JSON file, and a small sweep on it.

    python examples/custom_behavior_sweep.py [OUT_DIR]

The behaviour: cheerful replies, scored by the built-in sentiment scorer (VADER), with contrast
sentences and evaluation prompts of our own. The sweep tries two layers x two strengths on
the selection half of the prompts, picks the best cell whose fluency cost stays under the
bound, and scores it on the held-out test half beside the unsteered model.
"""

import json
import sys
import tempfile
from pathlib import Path

import steerlab

out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
behavior = {
    "name": "cheerful",
    "description": "Answer in a cheerful, upbeat tone.",
    "scorer": "sentiment",
    "positive": [
        "What a wonderful morning, I feel fantastic!",
        "I love this sunny day, everything is great.",
        "The party was a delight and everyone laughed.",
        "I'm thrilled with how well the project went.",
        "Our garden is blooming and it makes me so happy.",
        "The concert was amazing, best night ever!",
        "I got the job and I'm overjoyed.",
        "The kids had a brilliant time at the beach.",
    ],
    "negative": [
        "What a miserable morning, I feel awful.",
        "I hate this grey day, everything is wrong.",
        "The party was a disaster and everyone left early.",
        "I'm upset with how badly the project went.",
        "Our garden is dying and it makes me so sad.",
        "The concert was terrible, worst night ever.",
        "I lost the job and I'm heartbroken.",
        "The kids had a dreadful time at the beach.",
    ],
    "eval_prompts": [
        "Describe your morning.",
        "Write a sentence about the weather.",
        "Tell me about a bus ride.",
        "What did you have for lunch?",
        "Describe an office meeting.",
        "Write two lines about a train station.",
        "Tell me about a trip to the supermarket.",
        "Describe a rainy afternoon.",
        "What happened at work today?",
        "Write a short note to a neighbour.",
        "Describe a walk in the park.",
        "Tell me about your weekend.",
        "Describe the view from a window.",
        "Write a line about a Monday.",
        "Tell me about a visit to the dentist.",
        "Describe a queue at the post office.",
    ],
}
path = out / "cheerful.json"
path.write_text(json.dumps(behavior, indent=1))

lm = steerlab.load_model("smollm2-135m")
beh = steerlab.load_behavior(path)  # splits eval_prompts 8 / 8 by a hash of their text
cfg = steerlab.SweepConfig(
    layers="10,13", coeffs="0.125,0.25", max_new_tokens=16, max_ce_increase=1.0, neutral_prompts=4
)
report = steerlab.run_sweep(lm, beh, cfg, out / "sweep")  # a SweepReport; also sweep.json

chosen = report.chosen
print(f"chosen on selection: layer {chosen.layer}, {chosen.coeff} x residual norm")
test = report.test
for arm, r in (("steered", test.steered), ("unsteered", test.unsteered), ("random", test.random)):
    lo, hi = r.ci
    print(f"test {arm:9s}: score {r.score:.3f} [{lo:.3f}, {hi:.3f}] on {r.n} prompts")
vs = test.vs_unsteered
print(f"steered - unsteered, paired: {vs.diff:+.3f}, Holm p = {vs.p_holm:.3g}")
print("verdict:", report.verdict.text)
print("report:", out / "sweep" / "report.html")
