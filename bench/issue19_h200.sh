#!/usr/bin/env bash
# Issue 19 on one H200, in at most three `run` calls of under 10 minutes each (the device
# budget is 18 minutes). Each call is this script with a PART; results accumulate in
# RESULTS (a directory in the working tree, so the next call's copy of the tree holds what
# the last one wrote: bring $OUT/issue19.tgz back and unpack it there between calls).
#
#   bash bench/issue19_h200.sh 1 bench/results/perf-h200-issue19   # ~7 min
#   bash bench/issue19_h200.sh 2 bench/results/perf-h200-issue19   # ~7 min
#   bash bench/issue19_h200.sh 3 bench/results/perf-h200-issue19   # ~4 min: 200-step pair
#
# Part 1: install the carried wheels, FP8 per layer (bench/fp8_layers.py), then mgft bf16
#   LoRA, mgft FP8 LoRA and the tuned TRL recipe (30 steps each, one perf.py --out).
# Part 2: the plain TRL recipe, mgft QLoRA (with and without checkpointing) and the guides'
#   TRL QLoRA, into the same --out.
# Part 3: mgft bf16 and FP8 LoRA for 200 steps (issue 19's loss criterion), its own --out.
#
# Wheels the machine lacks (torch, transformers, peft and accelerate are there), fetched
# here into .whl/ (gitignored) and passed in `carry`:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl trl==1.16.0 datasets dill multiprocess \
#     liger-kernel==0.8.5 bitsandbytes==0.50.2 xxhash pyarrow
set -euo pipefail
part=${1:?usage: bash bench/issue19_h200.sh PART(1|2|3) RESULTS_DIR}
results=${2:?usage: bash bench/issue19_h200.sh PART RESULTS_DIR}
out=${OUT:-/tmp/issue19-out}
mkdir -p "$results" "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

if [ -d .whl ]; then
  pip install -q --no-index --find-links .whl --no-deps .whl/*.whl
fi
pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
  || export PYTHONPATH="$PWD/launcher:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  > "$results/nvidia-smi.txt"

perf() {  # --out DIR --steps N --only RUNS
  timeout 560 python bench/perf.py --gpus 1 --timeout 200 "$@" 2>&1 | tail -40
}
case $part in
  1)
    timeout 120 python bench/fp8_layers.py --out "$results/fp8_layers.json" || true
    perf --out "$results" --steps 30 \
      --only mgft-lora-ddp-1g,mgft-lora-ddp-1g@fp8,base-lora-ddp-1g@tuned ;;
  2)
    perf --out "$results" --steps 30 \
      --only base-lora-ddp-1g,mgft-qlora-ddp-1g,mgft-qlora-ddp-1g@ckpt,base-qlora-ddp-1g ;;
  3)
    perf --out "$results/steps-200" --steps 200 \
      --only mgft-lora-ddp-1g,mgft-lora-ddp-1g@fp8 ;;
esac
tar czf "$out/issue19.tgz" "$results"
