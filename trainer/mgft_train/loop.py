"""The training loop: one loop for every strategy, exact token-mean loss, the held-out eval
every --eval-every steps and at the end, checkpoints every --save-every steps and at the end,
a stop on SIGTERM/SIGUSR2 that every rank agrees on.

The strategy lives in the `Engine` (parallel/): the loop only calls forward, backward and
step on it, so what differs between DDP, FSDP, ZeRO and mp is in one small module each.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from mgft.spec.job import Save, TrainSpec
from torch.utils.data import DataLoader

from mgft_train import checkpoint, distributed, signals, tracking
from mgft_train.checkpoint import TrainState
from mgft_train.data import label_tokens, model_inputs, real_tokens
from mgft_train.data.order import Position, Stream
from mgft_train.distributed import Dist
from mgft_train.parallel.engine import Engine
from mgft_train.progress import reporter

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainResult:
    steps: int  # optimizer steps done, in this process and before it (a resumed run)
    losses: list[float]  # one per step, from step 1
    evals: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss"}, in order
    tokens: int  # real (non-pad) tokens, summed over ranks, over all steps
    elapsed_s: float  # time in training steps (checkpoint writes excluded), over all runs
    run_tokens: int = 0  # this process's share of `tokens`, for its throughput
    run_elapsed_s: float = 0.0
    checkpoint_s: float = 0.0
    eval_s: float = 0.0  # this process's time in evaluations (not in elapsed_s)
    resumed_from: int | None = None
    preempted: bool = False
    signals: list[str] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)  # this process's steps, each
    step_tokens: list[int] = field(default_factory=list)
    first_step_at: float | None = None  # wall clock (unix s) when this process's first step ended


def micro_batches(loader: DataLoader, skip: int = 0) -> Stream:
    """Endless stream across epochs (each with its own shuffle), starting after `skip`
    micro-batches of this loader's ranks; its `position` says where it stands for any number
    of ranks (data/order.py)."""
    sampler = loader.sampler
    return Stream(loader, Position.after_micro_batches(
        skip, size=sampler.size, micro_batch=loader.batch_size,
        world_size=sampler.world_size))


def loss_sum(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Summed (not mean) next-token loss, so the caller can divide by the whole step's count.

    The model computes it from the labels, so that Liger's fused loss (kernels.py) can skip
    the logits. transformers and Liger both divide a summed loss by num_items_in_batch; 1
    keeps the sum. Labels are shifted inside: position t is scored against labels[t + 1].
    """
    return model(**model_inputs(batch), labels=batch["labels"], num_items_in_batch=1).loss


def train(engine: Engine, loader: DataLoader, spec: TrainSpec, ctx: Dist, *, total: int,
          resume: TrainState | None = None,
          evaluate: Callable[[], float] | None = None) -> TrainResult:
    """`evaluate`: the held-out loss (a collective), when there is an eval set."""
    start = resume.step if resume else 0
    losses = list(resume.losses) if resume else []
    evals = list(resume.evals) if resume else []
    tokens_before = resume.tokens if resume else 0
    elapsed_before = resume.elapsed_s if resume else 0.0
    # Where a checkpoint's data stands, for any number of ranks (reshard.plan mapped it).
    stream = (Stream(loader, Position(**resume.position)) if resume and resume.position
              else micro_batches(loader, skip=start * spec.grad_accum))
    replan = _replan(resume, total, loader)
    run_tokens, run_elapsed, checkpoint_s, eval_s, stopped = 0, 0.0, 0.0, 0.0, False
    step_times: list[float] = []
    step_counts: list[int] = []
    first_step_at: float | None = None
    if ctx.is_main and spec.save is Save.CHECKPOINTS:
        checkpoint.clean_partials(spec.output)  # a kill or a full disk mid-write left it
    engine.train()
    with reporter(total, enabled=ctx.is_main, start=start) as report, \
            tracking.open_trackers(spec, ctx, start=start) as trackers:
        for step in range(start + 1, total + 1):
            step_start = time.perf_counter()
            lr = engine.lr()
            batches = [_to_device(next(stream), ctx.device) for _ in range(spec.grad_accum)]
            loss, step_tokens, stop = train_step(engine, batches, ctx, signals.requested())
            engine.step()
            step_s = time.perf_counter() - step_start
            first_step_at = first_step_at or time.time()
            losses.append(loss)
            run_tokens += step_tokens
            run_elapsed += step_s
            step_times.append(step_s)
            step_counts.append(step_tokens)
            eval_loss = None
            if evaluate is not None and eval_due(step, total, spec.eval_every):
                t0 = time.perf_counter()
                eval_loss = evaluate()
                eval_s += time.perf_counter() - t0
                evals.append({"step": step, "loss": eval_loss})
            report.step(step, total, loss, lr, step_tokens / step_s, eval_loss=eval_loss)
            trackers.step(step, loss=loss, lr=lr, tok_s=step_tokens / step_s,
                          eval_loss=eval_loss)
            due = stop or step % spec.save_every == 0 or step == total
            if due and spec.save is Save.CHECKPOINTS:
                t0 = time.perf_counter()
                state = TrainState(step=step, losses=losses, evals=evals,
                                   tokens=tokens_before + run_tokens,
                                   elapsed_s=elapsed_before + run_elapsed,
                                   world_size=ctx.world_size, spec=checkpoint.spec_record(spec),
                                   position=dataclasses.asdict(stream.position), **replan)
                checkpoint.write(engine, state, spec.output, ctx, spec.keep_checkpoints)
                checkpoint_s += time.perf_counter() - t0
            if stop and step < total:
                stopped = True
                trackers.preempted()
                break
    return TrainResult(steps=len(losses), losses=losses, evals=evals,
                       tokens=tokens_before + run_tokens,
                       elapsed_s=elapsed_before + run_elapsed, run_tokens=run_tokens,
                       run_elapsed_s=run_elapsed, checkpoint_s=checkpoint_s, eval_s=eval_s,
                       resumed_from=start if resume else None, preempted=stopped,
                       signals=signals.received(), step_s=step_times, step_tokens=step_counts,
                       first_step_at=first_step_at)


def _replan(resume: TrainState | None, total: int, loader: DataLoader) -> dict[str, Any]:
    """What a resize re-plans (reshard.plan), carried from checkpoint to checkpoint."""
    if resume is not None and resume.schedule is not None:
        return {"total": resume.total, "items": resume.items, "schedule": resume.schedule}
    return {"total": total, "items": loader.sampler.size,
            "schedule": {"total": total, "step": 0, "at": 0.0, "rate": 1.0}}


def eval_due(step: int, total: int, every: int | None) -> bool:
    """Every `every` steps (if given), and always after the last step."""
    return step == total or (every is not None and step % every == 0)


def train_step(engine: Engine, batches: list[Batch], ctx: Dist,
               stop_requested: bool = False) -> tuple[float, int, bool]:
    """Forward/backward over one optimizer step's micro-batches.

    Returns (loss, real tokens, stop): the loss is the mean over every predicted token of
    the step on all ranks, whatever the batch lengths: each micro-batch's summed loss is
    divided by the global token count, and multiplied by world_size because DDP, FSDP and
    ZeRO average (not sum) gradients across ranks. `stop` is true on every rank if any rank
    was asked to stop: it rides on the loss's all-reduce, so it costs no extra collective.
    """
    counts = [sum(label_tokens(b) for b in batches), sum(real_tokens(b) for b in batches)]
    global_labels, global_tokens = distributed.all_reduce(counts, ctx)
    scale = ctx.world_size / max(global_labels, 1.0)
    local_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    for i, batch in enumerate(batches):
        with engine.accumulating(last=i == len(batches) - 1):
            with engine.computing():
                summed = loss_sum(engine.model, batch)
            engine.backward(summed * scale)
        local_sum += summed.detach().to(local_sum.device)
    global_sum, stops = distributed.all_reduce([local_sum.item(), float(stop_requested)], ctx)
    return global_sum / max(global_labels, 1.0), int(global_tokens), stops > 0


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
