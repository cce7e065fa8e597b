#!/usr/bin/env bash
# Regenerate one committed result under benchmarks/results/:
#
#     bash benchmarks/reproduce.sh NAME        # NAME from the table below; no NAME lists them
#
# Each row: NAME | kind | arguments. For a steerlab kind (probe, ...) the arguments are
# steerlab's: the run goes to $RUNS/NAME (default runs/reproduce; a rerun resumes from its
# cache), then benchmarks/record_result.py writes benchmarks/results/NAME.json with the
# command, the steerlab version and commit, the model's weights hash, the choices and the
# per-prompt scores. For kind "run" the command runs through benchmarks/record.py, which keeps
# the whole result JSON it writes (compare.json, sweep.json) with the same provenance. For kind
# "script" the arguments are a Python script that writes benchmarks/results/NAME.json itself
# (given --name and --commit).
# STEERLAB (default: steerlab) and PYTHON (default: python) pick the executables.
#
# A run longer than one sitting can move between machines through its journals (one JSON line
# per finished unit, keyed by the configuration, the data, the weights and the library versions,
# so a mismatched journal is simply not read):
#
#     bash benchmarks/reproduce.sh --keep-journal NAME   # copy the run's journals to
#                                                        # benchmarks/journals/NAME (commit them)
#
# and a later `reproduce.sh NAME` on a fresh checkout starts from them and runs only the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

ENTRIES=(
  # NAME             | kind  | arguments
  "probe-harmful     | probe | probe -m qwen2.5-coder-0.5b -p builtin:harmful -n builtin:harmless"
  "probe-facts       | probe | probe -m qwen2.5-coder-0.5b -p builtin:true_facts -n builtin:false_facts"
  "probe-sentiment   | probe | probe -m smollm2-135m -p builtin:happy -n builtin:sad"
  "compare-sentiment-quick | run | compare -m smollm2-135m -b builtin:sentiment --quick"
  "compare-french-quick | run | compare -m smollm2-135m -b builtin:french --quick"
  "compare-sentiment | run | compare -m smollm2-135m -b builtin:sentiment"
  "compare-french    | run | compare -m smollm2-135m -b builtin:french"
  "compare-heldout-quick | run | compare -m smollm2-135m -b benchmarks/data/heldout_upbeat.json --quick --train-sizes 1,4,16"
  "sweep-sentiment   | run | sweep -m smollm2-135m -b builtin:sentiment --layers 4,7,10,13,16,19,22,25 --pairs 3 --random-control"
  "sweep-french      | run | sweep -m smollm2-135m -b builtin:french --layers 4,7,10,13,16,19,22,25 --pairs 3 --random-control"
  "sweep-sycophancy-ab | run | sweep -m qwen2.5-coder-0.5b -b builtin:sycophancy-ab --layers 6,9,12,15,18 --search auto"
  "sycophancy-ab-unsteered | script | benchmarks/ab_chance.py --model qwen2.5-coder-0.5b --behavior builtin:sycophancy-ab"
  "sycophancy-ab-unsteered-noprefill | script | benchmarks/ab_chance.py --model qwen2.5-coder-0.5b --behavior builtin:sycophancy-ab --no-prefill"
  "sycophancy-ab-unsteered-scorer | script | benchmarks/ab_chance.py --model qwen2.5-coder-0.5b --behavior builtin:sycophancy-ab --reading scorer"
)

# NAME | the entries it runs, in order (the README's tables)
ALIASES=(
  "probe | probe-harmful probe-facts probe-sentiment"
)

STEERLAB=${STEERLAB:-steerlab}
PYTHON=${PYTHON:-python}
RUNS=${RUNS:-runs/reproduce}

field() { echo "$1" | cut -d'|' -f"$2" | xargs; }

usage() {
  echo "usage: bash benchmarks/reproduce.sh NAME; NAME is one of:" >&2
  for e in "${ENTRIES[@]}"; do echo "  $(field "$e" 1): $(field "$e" 3)" >&2; done
  for g in "${ALIASES[@]}"; do echo "  $(field "$g" 1): $(field "$g" 2)" >&2; done
  exit 2
}

# flag value from an argument string: flag_value "-p" "probe -m M -p X -n Y" -> X
flag_value() {
  local want=$1 prev="" a
  for a in $2; do
    if [[ $prev == "$want" ]]; then echo "$a"; return; fi
    prev=$a
  done
}

record_probe() {  # NAME ARGS OUT COMMIT
  "$PYTHON" benchmarks/record_result.py probe "$3" --name "$1" --commit "$4" \
    --command "steerlab $2 --out $3" -p "$(flag_value -p "$2")" -n "$(flag_value -n "$2")"
}

JOURNALS=${JOURNALS:-benchmarks/journals}

if [[ ${1:-} == --keep-journal ]]; then
  name=${2:?usage: reproduce.sh --keep-journal NAME}
  shopt -s nullglob
  found=("$RUNS/$name"/cache/*.jsonl)
  [[ ${#found[@]} -gt 0 ]] || { echo "no journal under $RUNS/$name/cache" >&2; exit 1; }
  mkdir -p "$JOURNALS/$name"
  cp "${found[@]}" "$JOURNALS/$name/"
  for f in "${found[@]}"; do echo "$JOURNALS/$name/$(basename "$f"): $(wc -l < "$f") finished units"; done
  exit 0
fi

name=${1:-}
[[ -n $name ]] || usage
for g in "${ALIASES[@]}"; do
  [[ $(field "$g" 1) == "$name" ]] || continue
  for n in $(field "$g" 2); do bash "$0" "$n"; done
  exit 0
done
for e in "${ENTRIES[@]}"; do
  [[ $(field "$e" 1) == "$name" ]] || continue
  kind=$(field "$e" 2)
  args=$(field "$e" 3)
  out="$RUNS/$name"
  commit=$(git rev-parse HEAD)  # the code that runs, even if the tree moves meanwhile
  if [[ -d $JOURNALS/$name ]]; then  # units an earlier machine finished; a local journal wins
    mkdir -p "$out/cache"
    for f in "$JOURNALS/$name"/*.jsonl; do
      [[ -e $out/cache/$(basename "$f") ]] || cp "$f" "$out/cache/"
    done
  fi
  if [[ $kind == run ]]; then
    # shellcheck disable=SC2086
    exec "$PYTHON" benchmarks/record.py "$name" -- "$STEERLAB" $args --out "$out"
  fi
  if [[ $kind == script ]]; then
    # shellcheck disable=SC2086
    "$PYTHON" $args --name "$name" --commit "$commit"
    exit 0
  fi
  # shellcheck disable=SC2086  # the arguments are words by design
  "$STEERLAB" $args --out "$out" -q
  "record_$kind" "$name" "$args" "$out" "$commit"
  exit 0
done
echo "unknown result $name" >&2
usage
