#!/usr/bin/env bash
# BERT-base (seq 512) and GPT-2 medium (seq 1024) bfloat16 pre-training steps on one NVIDIA
# GPU with cuDNN attention (model.attention_impl=cudnn): tokens/s and MFU against the GPU's
# dense bf16 peak (benchmarks/throughput.py's table by device kind). Goals: >= 45% MFU for
# BERT-base, >= 50% for GPT-2 medium. Each run is capped so the whole script ends within
# 8 minutes.
#
#   benchmarks/gpu.sh             # on a machine with an NVIDIA GPU
#   benchmarks/gpu.sh --dry-run   # the same command lines at tiny sizes on the CPU, with
#                                 # ATTENTION=xla (cuDNN attention needs a GPU)
#
# PYTHON (default python) runs throughput.py; ATTENTION overrides the attention implementation.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if [[ "${1:-}" == "--dry-run" ]]; then
  export JAX_PLATFORMS=cpu
  BERT=(--layers 2 --hidden 64 --heads 2 --vocab 1000 --batch 4 --seq-len 64)
  GPT=(--layers 2 --hidden 64 --heads 4 --vocab 1000 --batch 4 --seq-len 128)
  STEPS=(--steps 1 --warmup 1)
  ATTENTION=${ATTENTION:-xla}
  LIMIT=300
  TAG=" [dry run: tiny sizes, CPU]"
elif [[ $# -gt 0 ]]; then
  echo "usage: benchmarks/gpu.sh [--dry-run]" >&2
  exit 2
else
  platform=$($PY -c "import jax; print(jax.devices()[0].platform)")
  if [[ "$platform" != "gpu" ]]; then
    echo "error: benchmarks/gpu.sh needs an NVIDIA GPU; JAX sees $platform (--dry-run runs" \
         "the same commands at tiny sizes on the CPU)" >&2
    exit 2
  fi
  BERT=(--layers 12 --hidden 768 --heads 12 --vocab 30522 --batch 64 --seq-len 512)
  GPT=(--layers 24 --hidden 1024 --heads 16 --vocab 50257 --batch 32 --seq-len 1024)
  STEPS=(--steps 20 --warmup 3)
  ATTENTION=${ATTENTION:-cudnn}
  LIMIT=225  # seconds per model: start, compile, 23 steps
  TAG=""
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
run() {  # name, goal (MFU %), throughput.py arguments...
  local name=$1 goal=$2
  shift 2
  timeout "$LIMIT" "$PY" benchmarks/throughput.py "$@" --dtype bfloat16 \
    --attention-impl "$ATTENTION" --peer off "${STEPS[@]}" | tee "$out"
  tail -n 1 "$out" | "$PY" -c "
import json, sys
r = json.loads(sys.stdin.read())
met = 'met' if 100 * r['mfu'] >= $goal else 'NOT met'
print(f\"$name: {r['tokens_per_s']:,.0f} tokens/s, MFU {100 * r['mfu']:.1f}% (goal >= $goal%: \"
      f\"{met}), {r['device_kind']}, device memory {r['device_memory_mb']:,.0f} MB\")
" | tee -a "$out.summary"
  echo
}
run "BERT-base seq 512$TAG" 45 --model bert "${BERT[@]}"
run "GPT-2 medium seq 1024$TAG" 50 --model gpt "${GPT[@]}"
cat "$out.summary"
rm -f "$out.summary"
