#!/usr/bin/env bash
# The main job on the built-in default model, from a fresh machine: set up, then extract a
# happy-vs-sad direction and generate with it beside the unsteered model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/demo}
mkdir -p "$OUT"
.venv/bin/steerlab extract --model smollm2-135m -p builtin:happy -n builtin:sad \
  --layers all -o "$OUT/happy_sad.safetensors"
.venv/bin/steerlab generate --model smollm2-135m --vector "$OUT/happy_sad.safetensors" \
  --layer 12 --coeff 6 --compare --max-new-tokens 40 \
  --prompt "Tell me about your weekend." --prompt "Describe the weather today." \
  --prompt "What do you think of Mondays?"
echo "direction artifact: $OUT/happy_sad.safetensors"
