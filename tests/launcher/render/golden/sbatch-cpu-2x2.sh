#!/bin/bash
# Rendered by mgft 0.1.0. Submit with `mgft submit` or plain `sbatch`.
#SBATCH --job-name=mgft-llama-6bb39637
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=4
#SBATCH --time=30
#SBATCH --signal=USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=mgft-llama-6bb39637-%j.out
set -euo pipefail

export PYTHONUNBUFFERED=1
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=1
export MGFT_DIST_TIMEOUT=600
export MGFT_DEVICE=cpu
export MGFT_JOB_NAME=mgft-llama-6bb39637
export MGFT_BACKEND=slurm

# One task per node. mgft.node.slurm_task runs torchrun there: the head node (the first of
# SLURM_JOB_NODELIST) hosts the c10d store, on a port derived from the job id so that jobs
# sharing a node never collide on a fixed 29500. It passes USR2 on to the trainer processes
# and requeues the job when they stopped at a checkpoint (exit 75); the requeued job resumes
# from it. `mgft submit --backend slurm` runs the same task through submitit.
srun --ntasks-per-node=1 --kill-on-bad-exit=1 \
  python3 -m mgft.node.slurm_task \
  --nnodes=2 \
  --nproc-per-node=2 \
  -- \
  --log-dir=output/logs \
  --tee=3 \
  -m \
  mgft_train \
  --model=/models/llama \
  --dataset=/data/train.jsonl \
  --output=output \
  --strategy=ddp \
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
  --data-format=auto \
  --train-on-prompt=False \
  --packing=True \
  --overlong=truncate \
  --kernels=auto \
  --compile=none \
  --activation-checkpointing=False \
  --lora-dropout-recompute=False \
  --precision=mixed \
  --lora-targets=all-linear \
  --save=checkpoints \
  --save-every=100 \
  --keep-checkpoints=2 \
  --save-merged=False \
  --random-init=False \
  --report-to=tensorboard
