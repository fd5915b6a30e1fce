"""Resuming on another number of processes: where the data stands, how long the run still is,
and where on its learning-rate curve it continues.

The model and optimizer state are resharded by each strategy's `Engine.load_state` (DDP
checkpoints are whole, FSDP's are DCP, ZeRO's are converted to DeepSpeed's universal format);
this module decides the rest, from the checkpoint's trainer_state.json and the new job:

- Data: a checkpoint records how many items of the epoch's order (a function of --seed and
  the epoch only, data/order.py) all ranks together have consumed. The new ranks deal out
  the rest: within the epoch no item is repeated or skipped.
- Global batch: items per optimizer step are --micro-batch x --grad-accum x processes, and
  may change with the processes (--micro-batch and --grad-accum may change too, to keep it).
  Items consumed stay exact; a step may hold more or fewer of them than before.
- Length: with --max-steps the run still ends after that many optimizer steps. With
  --epochs it still ends when the last epoch's items are consumed: the remaining steps are
  counted again at the new global batch.
- Schedule: the learning rate continues from where it was, and the rest of its curve (warmup,
  cosine) is stretched or squeezed over the remaining steps, so it still ends where it would
  have. Unchanged when the number of steps left is (e.g. --max-steps).

A change that cannot work is refused: data whose item count differs from the checkpoint's
(another --dataset file at the same path, or other packing) makes its position meaningless.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from mgft.spec.job import TrainSpec

from mgft_train import optim
from mgft_train.data.order import Position
from mgft_train.errors import UsageError

# Flags that may change on resume together with the number of processes: they set the global
# batch, which only changes how many items each later step holds.
RESHAPE = frozenset({"micro_batch", "grad_accum"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Clock:
    """The learning-rate schedule of a run `total` steps long, read at optimizer step s from
    position `at + (s - step) * rate` on it: the identity until a resize re-anchors it."""

    total: int
    step: int = 0
    at: float = 0.0
    rate: float = 1.0

    def position(self, step: int) -> float:
        return self.at + (step - self.step) * self.rate

    def factor(self, step: int) -> float:
        return optim.lr_factor(self.position(step), self.total, optim.warmup_steps(self.total))

    def plain(self) -> bool:
        return self.step == 0 and self.at == 0.0 and self.rate == 1.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """How this job runs: its last step, where its data starts, its schedule."""

    total: int
    position: Position
    clock: Clock
    items: int  # in an epoch: a checkpoint's position counts these
    note: str | None = None  # what changed since the checkpoint, for rank 0's log

    def record(self) -> dict[str, Any]:
        """The fields trainer_state.json holds about it."""
        return {"total": self.total, "items": self.items,
                "position": dataclasses.asdict(self.position),
                "schedule": dataclasses.asdict(self.clock)}


def batches_per_epoch(items: int, world_size: int, micro_batch: int) -> int:
    return math.ceil(math.ceil(items / world_size) / micro_batch)


def steps_left(position: Position, epochs: float, items: int, world_size: int,
               micro_batch: int, grad_accum: int) -> int:
    """Optimizer steps that consume the rest of `epochs` epochs from `position`."""
    left = epochs * items - (position.epoch * items + position.items)
    batches, first = 0, position.items
    while left > 0:
        take = min(left, items - first)
        batches += batches_per_epoch(math.ceil(take), world_size, micro_batch)
        left, first = left - take, 0
    return math.ceil(batches / grad_accum)


def plan(state: Any, spec: TrainSpec, world_size: int, items: int) -> Plan:
    """`state`: the checkpoint's TrainState, or None for a fresh run."""
    total = optim.total_steps(spec, batches_per_epoch(items, world_size, spec.micro_batch))
    if state is None:
        return Plan(total=total, position=Position(), clock=Clock(total=total), items=items)
    was_micro, was_accum = state.spec["micro_batch"], state.spec["grad_accum"]
    if state.items is not None and state.items != items:
        raise UsageError("--dataset", spec.dataset,
                         f"gives {items} training items per epoch where the checkpoint in "
                         f"{spec.output} counted {state.items}, so its data position "
                         "(items consumed) would point elsewhere",
                         "resume with the same data, or pick a new --output")
    # Checkpoints from before positions and schedules were recorded: derived from their step,
    # as the run that wrote them counted it.
    position = (Position(**state.position) if state.position is not None else
                Position.after_micro_batches(state.step * was_accum, size=items,
                                             micro_batch=was_micro,
                                             world_size=state.world_size))
    was_total = state.total if state.total is not None else optim.total_steps(
        spec, batches_per_epoch(items, state.world_size, was_micro))
    clock = Clock(**state.schedule) if state.schedule is not None else Clock(total=was_total)
    before = (state.world_size, was_micro, was_accum)
    now = (world_size, spec.micro_batch, spec.grad_accum)
    if now == before:
        return Plan(total=was_total, position=position, clock=clock, items=items)
    new_total = (spec.max_steps if spec.max_steps is not None else state.step + steps_left(
        position, spec.epochs, items, world_size, spec.micro_batch, spec.grad_accum))
    at, remaining = clock.position(state.step), new_total - state.step
    rate = (clock.total - at) / remaining if remaining > 0 else 1.0
    note = (f"global batch {_batch(before)} -> {_batch(now)} items per step; "
            f"{position.items} of epoch {position.epoch}'s {items} items consumed, the rest "
            f"dealt to {world_size} ranks; {remaining} steps left")
    return Plan(total=new_total, position=position, items=items, note=note,
                clock=Clock(total=clock.total, step=state.step, at=at, rate=rate))


def _batch(layout: tuple[int, int, int]) -> str:
    world, micro, accum = layout
    return f"{micro * accum * world} ({world} ranks x --micro-batch {micro} x --grad-accum {accum})"


def continue_schedule(scheduler: Any, clock: Clock) -> None:
    """Point a LambdaLR (as optim.make_scheduler builds it, its state already loaded) at
    `clock`, and set the learning rate of the next step from it."""
    groups = scheduler.optimizer.param_groups
    scheduler.lr_lambdas = [clock.factor] * len(groups)
    for group, base in zip(groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * clock.factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in groups]


def reseed(seed: int, step: int, rank: int) -> None:
    """Generators for a rank of a resized run: the old ranks' dropout streams belong to
    other shares of the data, so each rank draws a fresh one of its own, reproducibly."""
    import random

    import torch

    value = (seed * 1_000_003 + step) * 4099 + rank
    random.seed(value)
    torch.manual_seed(value)
