"""The training loop: AdamW, warmup + cosine, gradient accumulation, exact token-mean loss."""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from mgft.spec import TrainSpec
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mgft_train import distributed
from mgft_train.data import IGNORE, label_tokens, model_inputs, real_tokens
from mgft_train.distributed import Dist
from mgft_train.progress import reporter

WARMUP_FRACTION = 0.03
MIN_LR_RATIO = 0.1  # cosine ends at 10% of peak rather than 0: the last steps still learn
MAX_GRAD_NORM = 1.0
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainResult:
    steps: int
    losses: list[float]
    tokens: int  # real (non-pad) tokens, summed over ranks
    elapsed_s: float
    peak_memory_bytes: int  # the largest of any rank


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


def make_optimizer(model: torch.nn.Module, spec: TrainSpec,
                   device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for all parameters instead of several per tensor; CUDA only here.
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0,
                             fused=device.type == "cuda")


def micro_batches(loader: DataLoader) -> Iterator[Batch]:
    """Endless stream across epochs; set_epoch gives each epoch its own shuffle."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def loss_sum(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Summed (not mean) next-token loss, so the caller can divide by the whole step's count."""
    logits = model(**model_inputs(batch)).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(),
                           ignore_index=IGNORE, reduction="sum")


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def train(model: torch.nn.Module, loader: DataLoader, spec: TrainSpec, ctx: Dist) -> TrainResult:
    total = total_steps(spec, len(loader))
    optimizer = make_optimizer(model, spec, ctx.device)
    warmup = warmup_steps(total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
    stream = micro_batches(loader)
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses: list[float] = []
    tokens = 0
    model.train()
    start = time.perf_counter()
    with reporter(total, enabled=ctx.is_main) as report:
        for step in range(1, total + 1):
            step_start = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            batches = [_to_device(next(stream), ctx.device) for _ in range(spec.grad_accum)]
            loss, step_tokens = train_step(model, batches, ctx)
            torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
            tokens += step_tokens
            report.step(step, total, loss, lr, step_tokens / (time.perf_counter() - step_start))
    elapsed = time.perf_counter() - start
    (peak,) = distributed.all_reduce([peak_memory_bytes(ctx.device)], ctx, op="max")
    return TrainResult(steps=total, losses=losses, tokens=tokens, elapsed_s=elapsed,
                       peak_memory_bytes=int(peak))


def train_step(model: torch.nn.Module, batches: list[Batch], ctx: Dist) -> tuple[float, int]:
    """Forward/backward over one optimizer step's micro-batches; returns (loss, real tokens).

    The loss is the mean over every predicted token of the step on all ranks, whatever the
    batch lengths: each micro-batch's summed loss is divided by the global token count, and
    multiplied by world_size because DDP averages (not sums) gradients across ranks.
    """
    counts = [sum(label_tokens(b) for b in batches), sum(real_tokens(b) for b in batches)]
    global_labels, global_tokens = distributed.all_reduce(counts, ctx)
    scale = ctx.world_size / max(global_labels, 1.0)
    local_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    for i, batch in enumerate(batches):
        # Only the last micro-batch all-reduces gradients; the others accumulate locally.
        last = i == len(batches) - 1
        sync = nullcontext() if last or not isinstance(model, DistributedDataParallel) \
            else model.no_sync()
        with sync:
            summed = loss_sum(model, batch)
            (summed * scale).backward()
        local_sum += summed.detach()
    (global_sum,) = distributed.all_reduce([local_sum.item()], ctx)
    return global_sum / max(global_labels, 1.0), int(global_tokens)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
