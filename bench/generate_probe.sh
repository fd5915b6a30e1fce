#!/usr/bin/env bash
# The decode comparisons in bench/results/generate-probe.json (GPU machine; 4 GPUs for the
# concurrent ones). Usage: bash bench/generate_probe.sh OUT_DIR
# One process per GPU, each alone on its GPU (CUDA_VISIBLE_DEVICES), no communication: what
# `mgft generate`'s ranks do, without mgft around them.
set -euo pipefail
out=${1:?usage: bash bench/generate_probe.sh OUT_DIR}
mkdir -p "$out"
work=${TMPDIR:-/tmp}/mgft-bench/generate_probe
model=$work/models/llama-3.2-1b prompts=$work/prompts-2048.jsonl
python - "$model" "$prompts" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
from bench_assets import build_model, prompt_rows
build_model("llama-3.2-1b", Path(sys.argv[1]))
prompt_rows(Path(sys.argv[2]), 2048)
EOF
export OMP_NUM_THREADS=4  # as mgft's job environment sets it on GPUs

alone() {  # NAME [ENV=VALUE ...]; probe flags from $PROBE_FLAGS
  local name=$1 flags; shift
  read -ra flags <<< "${PROBE_FLAGS:-}"
  env CUDA_VISIBLE_DEVICES=0 "$@" python bench/generate_probe.py "$model" "$prompts" \
    "$out/$name.json" "${flags[@]}"
}
together() {  # NAME: 4 copies at once, one per GPU
  local name=$1 start flags pids=()
  read -ra flags <<< "${PROBE_FLAGS:-}"
  start=$(mktemp -d)
  for gpu in 0 1 2 3; do
    CUDA_VISIBLE_DEVICES=$gpu python bench/generate_probe.py "$model" "$prompts" \
      "$out/$name-$gpu.json" --start-with 4 --start-dir "$start" "${flags[@]}" &
    pids+=($!)
  done
  wait "${pids[@]}"
  rm -rf "$start"
}

# Is a batch slower beside 3 other processes? (batch 32, then 64)
alone alone-32; together together-32
PROBE_FLAGS="--batch-size 64" alone alone-64; PROBE_FLAGS="--batch-size 64" together together-64
# Liger's kernels in decoding.
PROBE_FLAGS="--liger" alone liger-32
# What the first batch's extra second is not: lazy kernel loading, allocator growth.
PROBE_FLAGS="--batches 4" alone first-eager CUDA_MODULE_LOADING=EAGER
PROBE_FLAGS="--batches 4 --reserve-gib 16" alone first-reserve
PROBE_FLAGS="--batches 4" alone first-expandable PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
# Throughput by batch size.
for size in 16 32 64 128 256 512; do
  PROBE_FLAGS="--batches 4 --batch-size $size" alone "size-$size"
done
