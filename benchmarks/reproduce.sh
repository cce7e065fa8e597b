#!/usr/bin/env bash
# Regenerate one recorded result by name: runs its command through benchmarks/record.py, which
# rewrites benchmarks/results/NAME.json (command, version, commit, model fingerprint, per-prompt
# scores). `bash benchmarks/reproduce.sh` lists the names. Run directories go under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
S=".venv/bin/steerlab"
declare -A CMD=(
  [compare_sentiment_quick]="$S compare -m smollm2-135m -b builtin:sentiment --quick --out runs/compare-sentiment-quick"
  [compare_french_quick]="$S compare -m smollm2-135m -b builtin:french --quick --out runs/compare-french-quick"
  [compare_sentiment]="$S compare -m smollm2-135m -b builtin:sentiment --out runs/compare-sentiment"
  [compare_french]="$S compare -m smollm2-135m -b builtin:french --out runs/compare-french"
  [compare_heldout_quick]="$S compare -m smollm2-135m -b benchmarks/data/heldout_upbeat.json --quick --train-sizes 1,4,16 --out runs/compare-heldout"
  [sweep_sentiment]="$S sweep -m smollm2-135m -b builtin:sentiment --layers 4,7,10,13,16,19,22,25 --pairs 3 --random-control --out runs/sweep-sentiment"
  [sweep_french]="$S sweep -m smollm2-135m -b builtin:french --layers 4,7,10,13,16,19,22,25 --pairs 3 --random-control --out runs/sweep-french"
)
name="${1:-}"
if [ -z "$name" ] || [ -z "${CMD[$name]:-}" ]; then
  echo "usage: bash benchmarks/reproduce.sh NAME; names:" >&2
  for k in $(printf '%s\n' "${!CMD[@]}" | sort); do echo "  $k: ${CMD[$k]}" >&2; done
  exit 2
fi
bash scripts/setup.sh >/dev/null
# shellcheck disable=SC2086  # the table's commands are word lists
exec .venv/bin/python benchmarks/record.py "$name" -- ${CMD[$name]}
