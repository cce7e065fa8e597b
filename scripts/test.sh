#!/usr/bin/env bash
# Set up (if needed) and run the default test suite (slow tests excluded; run them with -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m ruff check src tests benchmarks examples docs
exec .venv/bin/python -m pytest -q "$@"
