#!/usr/bin/env bash
# The cpu-preset reproduction of the OOD gap and its sensitivity to the QA-phase learning rate.
# Protocol (fixed before any OOD number was seen): both strategies at lr 5e-4, batch 4, 10 epochs, linear
# warm-up (3%) + decay, seed 0; the sensitivity rows change the learning rate of the phase that trains QA
# (two-stage: the QA phase, from the same after-BIO model; mixed: the whole run) to 1.5e-4 and 5e-5.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-runs/cpu}
mkdir -p "$OUT"
[ -f "$OUT/data/manifest.json" ] || $PY analyses/make_data.py --preset cpu --out "$OUT/data"
ft() { local out=$1; shift; if [ ! -f "$out/results.json" ]; then
  if [ -d "$out" ]; then $PY analyses/finetune.py --preset cpu --data "$OUT/data" --out "$out" --resume --no-progress "$@";
  else $PY analyses/finetune.py --preset cpu --data "$OUT/data" --out "$out" --no-progress "$@"; fi; fi; }
ft "$OUT/two-stage" --strategy two-stage
ft "$OUT/mixed" --strategy mixed
for lr in 1.5e-4 5e-5; do ft "$OUT/two-stage-qalr$lr" --strategy two-stage --model "$OUT/two-stage/after_bio" --bio-epochs 0 --qa-lr "$lr"; done
for lr in 1.5e-4 5e-5; do
  ft "$OUT/mixed-lr$lr" --strategy mixed --lr "$lr"
done
