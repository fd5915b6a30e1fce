#!/usr/bin/env bash
# Issue 19 on one H200, in at most three `run` calls of under 10 minutes each (the device
# budget is 18 minutes). Each call is this script with a PART; results accumulate in
# RESULTS (a directory in the working tree, so the next call's copy of the tree holds what
# the last one wrote: bring $OUT/issue19.tgz back and unpack it there between calls).
#
#   bash bench/issue19_h200.sh 1 bench/results/perf-h200-issue19   # ~7 min
#   bash bench/issue19_h200.sh 2 bench/results/perf-h200-issue19   # ~7 min
#   bash bench/issue19_h200.sh 3 bench/results/perf-h200-issue19   # ~4 min: 200-step pair
#   bash bench/issue19_h200.sh 4 bench/results/perf-h200-issue19   # issue 18's host memory
#   bash bench/issue19_h200.sh 5 bench/results/perf-h100-fp8-triton # ~8 min: quantizer,
#     200-step bf16/FP8 pair, the tuned recipe
#   bash bench/issue19_h200.sh 6 bench/results/perf-h100-fp8-triton # ~4 min: mgft QLoRA, a
#     profile of a bf16 and an FP8 LoRA step (bench/step_profile.py)
#   bash bench/issue19_h200.sh 8 bench/results/perf-h100-dropout-fn # ~5 min: LoRA dropout
#     stored, folded (autograd.Function), folded (checkpoint), QLoRA and LoRA, one machine
#   bash bench/issue19_h200.sh 7 bench/results/perf-h100-dropout-fn # ~8 min: the LoRA dropout
#     fold's cost per adapter, mgft QLoRA, bf16 and FP8 LoRA, profiles of an FP8 and a bf16 step
#   bash bench/issue19_h200.sh 9 bench/results/perf-compile-blocks # ~5 min: regional compile
#     (bench/compile_hook) against the trainer as shipped, LoRA and QLoRA
#   bash bench/issue19_h200.sh 10 bench/results/perf-compile-blocks # ~6 min: FP8 with and
#     without the compiled blocks, a profile of a compiled bf16 step
#   bash bench/issue19_h200.sh 11 bench/results/perf-compile-blocks # ~5 min: FP8 in compiled
#     blocks beside bf16 eager and compiled
#   bash bench/issue19_h200.sh 12 bench/results/perf-compile-blocks # ~6 min: the trainer's
#     --compile blocks, LoRA and QLoRA with activation checkpointing
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
#     liger-kernel==0.8.5 bitsandbytes==0.50.2 xxhash hjson msgpack py-cpuinfo einops psutil
#   (ninja: --platform manylinux2014_x86_64) and deepspeed, an sdist: `pip wheel --no-deps
#   --no-build-isolation deepspeed==0.19.8 -w .whl`.
set -euo pipefail
part=${1:?usage: bash bench/issue19_h200.sh PART(1|2|3) RESULTS_DIR}
results=${2:?usage: bash bench/issue19_h200.sh PART RESULTS_DIR}
out=${OUT:-/tmp/issue19-out}
mkdir -p "$results" "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

if [ -d .whl ]; then
  python -m pip install -q --no-index --find-links .whl --no-deps .whl/*.whl
fi
# The tree's own code first, whatever pip did with it.
python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
export PYTHONPATH="$PWD/launcher:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  > "$results/nvidia-smi.txt"

perf() {  # --out DIR --steps N --only RUNS
  # perf.json is rewritten after each run: a timeout keeps the runs that finished.
  timeout "${PERF_TIMEOUT:-540}" python bench/perf.py --gpus 1 --timeout 200 "$@" 2>&1 \
    | tail -40 || true
}
profiles() {  # TIMEOUT WAIT ACTIVE "name:trainer flags"...: bench/step_profile.py on each
  local limit=$1 wait=$2 active=$3 work=/tmp/mgft-bench/perf item name
  shift 3
  if [ ! -f $work/sft-llama-3-8b-128-1024-360-0.jsonl ]; then  # perf.py's assets
    python -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path
from bench_assets import model_config, sft_rows
model = model_config('llama-3-8b', Path('$work/models/llama-3-8b'), seed=0)
sft_rows(model, Path('$work/sft-llama-3-8b-128-1024-360-0.jsonl'), 360, (128, 1024), seed=0)"
  fi
  for item in "$@"; do
    name=${item%%:*}
    # shellcheck disable=SC2086 # the flags are words
    timeout "$limit" python -m torch.distributed.run --standalone --nproc-per-node 1 \
      bench/step_profile.py --out "$results/step-profile-$name" --wait "$wait" \
      --active "$active" -- --model $work/models/llama-3-8b \
      --dataset $work/sft-llama-3-8b-128-1024-360-0.jsonl --output "/tmp/profile-$name" \
      --strategy ddp --max-steps $((wait + active + 2)) --lr 0.0002 --seed 0 --lora-r 16 \
      --random-init true --micro-batch 4 --grad-accum 1 --seq-len 1024 --save none \
      ${item#*:} 2>&1 | grep -v "Backend impl" | tail -16 || true
  done
}
ab_run() {  # GROUP TUNING MODE TIMEOUT STEPS [FLAGS]: one mgft run of an A/B (the caller sets
  # the hook's environment), its metrics.json kept as RESULTS/GROUP/TUNING-MODE.metrics.json
  local group=$1 tuning=$2 mode=$3 limit=$4 steps=$5 work=/tmp/mgft-bench/perf
  local dir=/tmp/$group-$tuning-$mode
  shift 5
  timeout "$limit" python -m torch.distributed.run --standalone --nproc-per-node 1 -m mgft_train \
    --model $work/models/llama-3-8b --dataset $work/sft-llama-3-8b-128-1024-360-0.jsonl \
    --output "$dir" --strategy ddp --tuning "$tuning" --max-steps "$steps" --lr 0.0002 \
    --seed 0 --lora-r 16 --random-init true --micro-batch 4 --grad-accum 1 --seq-len 1024 \
    --save none "$@" > "$dir.log" 2>&1 || tail -8 "$dir.log"
  mkdir -p "$results/$group" && cp "$dir/metrics.json" \
    "$results/$group/$tuning-$mode.metrics.json" 2>/dev/null || true
  python -c "import json, sys; m = json.load(open(sys.argv[1])); s = m['step_s']
print(sys.argv[2], f\"{m['tokens_per_s_after_warmup']:,.0f} tok/s after warm-up,\",
      f\"median step {m['tokens_per_s_median_step']:,.0f},\",
      f\"peak {m['peak_memory_bytes'] / 2**30:.1f} GiB, steps 1-3 {s[0]:.1f} {s[1]:.1f}\",
      f\"{s[2]:.2f} s, loss {m['last_loss']:.4f}\", m['kernels'])" \
    "$dir/metrics.json" "$tuning-$mode" || true
}
case $part in
  1)
    timeout 200 python bench/fp8_layers.py --profile --out "$results/fp8_layers.json" 2>&1 \
      | grep -v "^-*$" | cut -c1-160 || true
    PERF_TIMEOUT=400 perf --out "$results" --steps 30 \
      --only mgft-lora-ddp-1g,mgft-lora-ddp-1g@fp8,base-lora-ddp-1g@tuned
    # which quantizer the FP8 run used (fp8._fast_quantizer's record)
    grep -ho '"fp8:[^"]*"' "$results"/runs/mgft-lora-ddp-1g@fp8.metrics.json || true ;;
  2)
    perf --out "$results" --steps 30 \
      --only base-lora-ddp-1g,mgft-qlora-ddp-1g,mgft-qlora-ddp-1g@ckpt,base-qlora-ddp-1g ;;
  3)
    perf --out "$results/steps-200" --steps 200 \
      --only mgft-lora-ddp-1g,mgft-lora-ddp-1g@fp8 ;;
  5)  # the Triton quantizer: picked? then the 200-step pair and the tuned recipe
    python -c "import torch; from mgft_train import fp8; fp8._fast_quantizer(torch.device('cuda'));
print('quantizer:', fp8._quantizer)" 2>&1 | tail -3
    PERF_TIMEOUT=330 perf --out "$results/steps-200" --steps 200 \
      --only mgft-lora-ddp-1g,mgft-lora-ddp-1g@fp8
    grep -ho '"\(fp8\|lora-dropout\):[^"]*"' "$results"/steps-200/runs/*.metrics.json || true
    PERF_TIMEOUT=100 perf --out "$results" --steps 30 --only base-lora-ddp-1g@tuned ;;
  6)  # mgft QLoRA (its memory with LoRA dropout recomputed), then a profile of each step
      # (qlora-nodrop: no LoRA dropout at all, nothing stored or recomputed)
    [ -f "$results/runs/mgft-qlora-ddp-1g.metrics.json" ] ||
      PERF_TIMEOUT=150 perf --out "$results" --steps 30 --only mgft-qlora-ddp-1g
    profiles 80 6 3 "lora-auto:--tuning lora --kernels auto" \
      "lora-fp8:--tuning lora --kernels fp8" "qlora-auto:--tuning qlora --kernels auto" \
      "qlora-nodrop:--tuning qlora --kernels auto --lora-dropout 0" ;;
  7)  # the dropout fold as an autograd.Function: its cost per adapter; mgft QLoRA, bf16 and
      # FP8 LoRA with it (30 steps); a profile of an FP8 and a bf16 LoRA step
    timeout 60 python bench/lora_dropout_cost.py --out "$results/lora_dropout_cost.json" || true
    PERF_TIMEOUT=240 perf --out "$results" --steps 30 \
      --only mgft-qlora-ddp-1g,mgft-lora-ddp-1g,mgft-lora-ddp-1g@fp8
    profiles 150 4 2 "lora-fp8:--tuning lora --kernels fp8" \
      "lora-auto:--tuning lora --kernels auto" ;;
  8)  # the LoRA dropout, three ways in one machine (bench/dropout_hook): peft's stored
      # modules, the fold as an autograd.Function (as shipped), the fold by checkpoint
    profiles 1 0 0  # the assets only (no case)
    for tuning in qlora lora; do
      for mode in stored function checkpoint; do
        PYTHONPATH="$PWD/bench/dropout_hook:$PYTHONPATH" MGFT_BENCH_DROPOUT=$mode \
          ab_run dropout-ab $tuning $mode 100 20
      done
    done ;;
  9)  # regional torch.compile of the decoder blocks (bench/compile_hook) against the trainer
      # as shipped, one machine, 30 steps each; the compile is paid in steps 1-2
    profiles 1 0 0  # the assets only (no case)
    for item in ${COMPILE_RUNS:-lora:off lora:blocks qlora:off qlora:blocks lora:blocks-liger}; do
      if [ "$SECONDS" -gt "${COMPILE_UNTIL:-420}" ]; then echo "skip $item: time"; continue; fi
      PYTHONPATH="$PWD/bench/compile_hook:$PYTHONPATH" MGFT_BENCH_COMPILE=${item#*:} \
        TORCH_LOGS=recompiles,graph_breaks ab_run compile-ab "${item%%:*}" "${item#*:}" 200 30
      grep -E "Recompiling|[Gg]raph break|bench-compile" "/tmp/compile-ab-${item/:/-}.log" \
        | cut -c1-400 | head -40 > "$results/compile-ab/${item/:/-}.compile.log" || true
    done ;;
  10)  # after part 9: FP8 with and without the compiled blocks, then a profile of a
       # compiled bf16 step (what is left once the launches are fused)
    profiles 1 0 0  # the assets only (no case)
    for mode in off blocks; do
      PYTHONPATH="$PWD/bench/compile_hook:$PYTHONPATH" MGFT_BENCH_COMPILE=$mode \
        TORCH_LOGS=recompiles,graph_breaks ab_run compile-ab lora "$mode-fp8" 200 30 \
        --kernels fp8
      grep -E "Recompiling|[Gg]raph break|bench-compile|Error" "/tmp/compile-ab-lora-$mode-fp8.log" \
        | cut -c1-400 | head -60 > "$results/compile-ab/lora-$mode-fp8.compile.log" || true
    done
    PYTHONPATH="$PWD/bench/compile_hook:$PYTHONPATH" MGFT_BENCH_COMPILE=blocks \
      profiles 240 4 2 "lora-compiled:--tuning lora --kernels auto" ;;
  11)  # FP8 in compiled blocks (fp8_triton's scalars cast to fp32), beside bf16 eager and
       # compiled on the same machine
    profiles 1 0 0  # the assets only (no case)
    for item in lora:off:auto lora:blocks:fp8 lora:blocks:auto; do
      IFS=: read -r tuning mode kernels <<< "$item"
      PYTHONPATH="$PWD/bench/compile_hook:$PYTHONPATH" MGFT_BENCH_COMPILE=$mode \
        TORCH_LOGS=recompiles,graph_breaks ab_run compile-ab-2 "$tuning" "$mode-$kernels" 200 30 \
        --kernels "$kernels"
      grep -E "Recompiling|[Gg]raph break|bench-compile|Error" \
        "/tmp/compile-ab-2-$tuning-$mode-$kernels.log" | cut -c1-400 | head -60 \
        > "$results/compile-ab-2/$tuning-$mode-$kernels.compile.log" || true
    done ;;
  12)  # the trainer's own --compile blocks (no hook): LoRA, and QLoRA with activation
       # checkpointing (the 12 GiB path), each beside --compile none on the same machine
    profiles 1 0 0  # the assets only (no case)
    for item in ${FLAG_RUNS:-lora:none lora:blocks qlora:none qlora:blocks}; do
      tuning=${item%%:*} choice=${item#*:} extra=()
      [ "$tuning" = qlora ] && extra=(--activation-checkpointing true)
      TORCH_LOGS=recompiles,graph_breaks ab_run compile-flag "$tuning" "$choice" 200 30 \
        --compile "$choice" "${extra[@]}"
    done
    python bench/compile_report.py --out "$results/compile-flag" \
      --pair LoRA lora-none lora-blocks --pair "QLoRA, checkpointing" qlora-none qlora-blocks \
      || true ;;
  4)  # issue 18: the plan's host figure against the measured host memory (zero3-offload)
    timeout 560 python bench/host_memory.py --configs "${HOST_CONFIGS:-1b-full-zero3-offload}" \
      --out "$results/host-memory.json" 2>&1 | tail -30 || true ;;
esac
tar czf "$out/issue19.tgz" "$results"
