#!/usr/bin/env bash
# Set up .venv-vllm (if needed) and run the tests marked `vllm` (one engine per test module).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_vllm.sh
VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} exec .venv-vllm/bin/python -m pytest -q -m vllm "$@"
