#!/usr/bin/env bash
# Create .venv and install steerlab with a CPU build of torch (an unpinned torch pulls a
# multi-GB CUDA build). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# On GPU machines set STEERLAB_TORCH to the torch you want (e.g. "torch" for the CUDA build).
TORCH=${STEERLAB_TORCH:-torch==2.13.0}
if ! .venv/bin/python -c "import steerlab, torch, pytest, vaderSentiment, lingua, openai, playwright" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q "$TORCH"
  .venv/bin/python -m pip install -q -e ".[dev,all]"
fi
