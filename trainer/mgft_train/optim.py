"""The optimizer and the learning-rate schedule: AdamW (as --precision keeps the weights,
mgft_train.precision), linear warmup, cosine to 10%."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from mgft.spec.job import Precision, Strategy, TrainSpec

from mgft_train.precision import KahanAdamW, MasterAdamW

WARMUP_FRACTION = 0.03
MIN_LR_RATIO = 0.1  # cosine ends at 10% of peak rather than 0: the last steps still learn
MAX_GRAD_NORM = 1.0
ZERO = frozenset({Strategy.ZERO1, Strategy.ZERO2, Strategy.ZERO3, Strategy.ZERO3_OFFLOAD})


def total_steps(spec: TrainSpec, batches_per_epoch: int) -> int:
    """--max-steps wins; otherwise enough optimizer steps to cover --epochs (at least one)."""
    if spec.max_steps is not None:
        return spec.max_steps
    return max(1, math.ceil(spec.epochs * batches_per_epoch / spec.grad_accum))


def warmup_steps(total: int) -> int:
    return max(1, round(WARMUP_FRACTION * total))


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak lr for 0-based optimizer step `step`: linear up, then cosine down."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: TrainSpec,
                   device: torch.device) -> torch.optim.Optimizer:
    """AdamW for the trainable parameters, keeping their updates as --precision asks."""
    trainable = [p for p in params if p.requires_grad]
    # fused: one kernel for all parameters instead of several per tensor; CUDA only here.
    fused = device.type == "cuda"
    low = any(p.dtype != torch.float32 for p in trainable)
    # fp32 weights are their own master copy; ZeRO's optimizer steps this AdamW on fp32
    # masters of its own; bf16 asks for nothing more.
    if not low or spec.strategy in ZERO or spec.precision is Precision.BF16:
        return torch.optim.AdamW(trainable, lr=spec.lr, weight_decay=0.0, fused=fused)
    if spec.precision is Precision.MIXED:
        return MasterAdamW(trainable, lr=spec.lr, weight_decay=0.0, fused=fused)
    return KahanAdamW(trainable, lr=spec.lr, weight_decay=0.0)


def make_scheduler(optimizer: torch.optim.Optimizer,
                   total: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = warmup_steps(total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
