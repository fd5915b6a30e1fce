#!/bin/bash
# Rendered by mgft 0.1.0. Submit with `mgft submit` or plain `sbatch`.
#SBATCH --job-name=mgft-llama-f649ac47
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=04:00:00
#SBATCH --partition=gpu
#SBATCH --output=mgft-llama-f649ac47-%j.out
set -euo pipefail

export PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1
export TORCH_NCCL_ASYNC_ERROR_HANDLING=3
export NCCL_DEBUG=WARN
export OMP_NUM_THREADS=4
export MGFT_DEVICE=cuda
export MGFT_JOB_NAME=mgft-llama-f649ac47
export MGFT_BACKEND=slurm

# Rendezvous on the allocation's first node, on a port derived from the job id so that
# jobs sharing a node never collide on a fixed 29500.
# (No `| head -n 1`: with pipefail its early exit can fail the job through SIGPIPE.)
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${nodes[0]}
rdzv_port=$((20000 + SLURM_JOB_ID % 20000))

# One task per node, each running torchrun. The first node hosts the c10d store
# (is_host), decided from SLURM_NODEID so torchrun never guesses from hostnames.
# shellcheck disable=SC2016  # $SLURM_NODEID must expand inside each task, not here
srun --ntasks-per-node=1 --kill-on-bad-exit=1 \
  bash -c 'export PET_RDZV_CONF="is_host=$(( SLURM_NODEID == 0 ))"; exec "$@"' mgft-node \
  torchrun \
  --nnodes=4 \
  --nproc-per-node=8 \
  --rdzv-backend=c10d \
  --rdzv-endpoint="$head_node:$rdzv_port" \
  --rdzv-id="$SLURM_JOB_ID" \
  -m \
  mgft_train \
  --model=/models/llama \
  --dataset=/data/train.jsonl \
  --output=output \
  --strategy=fsdp \
  --tuning=lora \
  --epochs=1.0 \
  --lr=0.0002 \
  --micro-batch=4 \
  --grad-accum=1 \
  --seq-len=1024 \
  --seed=0 \
  --lora-r=16 \
  --lora-alpha=32.0 \
  --lora-dropout=0.05 \
  --lora-targets=all-linear \
  --save-every=100 \
  --keep-checkpoints=2 \
  --save-merged=False \
  --random-init=False
