"""Probe a concept at a few layers and read the result: the best layer per method (chosen on
validation, never on test), its test accuracy with a 95% interval, and the shuffled-label
control at the same layer, which must stay near chance.

    python examples/read_probe.py [OUT_DIR]
"""

import json
import sys
import tempfile
from pathlib import Path

import steerlab

out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
lm = steerlab.load_model("smollm2-135m")
happy = steerlab.read_prompts("builtin:happy")[:40]
sad = steerlab.read_prompts("builtin:sad")[:40]
data = steerlab.make_probe_data(happy, sad, test_fraction=0.3, seed=0)
cfg = steerlab.ProbeConfig(
    layers="8,16,24", methods="mean_diff,logistic", train_sizes="8,all", draws=2
)
steerlab.run_probe(lm, data, cfg, out / "probe")  # also writes report.html beside probe.json

# probe.json holds every number the report shows: per method, one entry per probed layer.
result = json.loads((out / "probe" / "probe.json").read_text())
layers = result["layers"]
for method, best in result["best"].items():
    i = layers.index(best["layer"])
    test = result["methods"][method][i]
    control = result["controls"]["shuffled"][i]
    lo, hi = test["accuracy_ci"]
    print(
        f"{method:9s} best layer {best['layer']:2d}: test accuracy {test['accuracy']:.2f} "
        f"[{lo:.2f}, {hi:.2f}], shuffled labels {control['accuracy']:.2f}"
    )
