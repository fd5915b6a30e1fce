"""From estimates to a decision: which strategies fit, the largest micro-batch for each, and
the one to use. Pure arithmetic: no torch, no I/O."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mgft.plan.host import HostBreakdown, host
from mgft.plan.memory import ALL, GIB, Assumptions, Breakdown, Job, estimate
from mgft.spec.job import Precision, Strategy, Tuning

# The order `auto` tries strategies in: least communication and idle time first. ZeRO-2 moves
# the same bytes as DDP (a reduce-scatter and an all-gather instead of an all-reduce) and
# holds less, so it comes before ZeRO-1; FSDP2 before ZeRO-3 as the faster full sharding (8B
# LoRA on 4 H200s: about 3,500 against 1,300 tokens/s per GPU); mp leaves all but one GPU
# idle at a time; offload moves every step's state over PCIe.
PREFERENCE = (Strategy.DDP, Strategy.ZERO2, Strategy.ZERO1, Strategy.FSDP, Strategy.ZERO3,
              Strategy.MP, Strategy.ZERO3_OFFLOAD)
WHY = {
    Strategy.DDP: "a full replica per GPU, so the least communication",
    Strategy.ZERO2: "DDP's traffic with gradients and optimizer states sharded",
    Strategy.ZERO1: "DDP's traffic with optimizer states sharded",
    Strategy.FSDP: "everything sharded, each layer gathered just before it runs",
    Strategy.ZERO3: "everything sharded, each module gathered just before it runs",
    Strategy.MP: "the layers split across the node's GPUs, which take turns",
    Strategy.ZERO3_OFFLOAD: "parameters and optimizer in CPU memory, copied in every step",
}
MAX_MICRO_BATCH = 4096  # the spec's own upper bound


@dataclass(frozen=True, kw_only=True, slots=True)
class Budget:
    gpu_memory_gib: float = 80.0
    margin: float = 0.10  # kept free: fragmentation, estimate error, anything else
    overhead_gib: float = Assumptions().cuda_overhead_gib
    host_memory_gib: float | None = None  # of each node; None: unknown, not checked

    @property
    def usable(self) -> float:
        """Bytes the allocator may hold at its peak."""
        return self.gpu_memory_gib * (1 - self.margin) * GIB - self.overhead_gib * GIB

    def host_fits(self, need: float) -> bool:
        return self.host_memory_gib is None or need <= self.host_memory_gib * GIB


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    breakdown: Breakdown
    fits: bool  # on the GPU
    max_micro_batch: int  # 0: not even one sequence fits
    host: HostBreakdown
    host_fits: bool = True  # on the node's host memory (always, when that is unknown)

    @property
    def strategy(self) -> Strategy:
        return self.breakdown.strategy


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    job: Job
    budget: Budget
    rows: tuple[Row, ...]
    choice: Strategy | None
    reason: str

    def row(self, strategy: Strategy) -> Row:
        return next(r for r in self.rows if r.strategy is strategy)


def candidates(job: Job, exclude: frozenset[Strategy] = frozenset()) -> tuple[Strategy, ...]:
    """mp needs a node with 2+ GPUs to split over; bf16 weights, a strategy whose optimizer
    mgft steps (not ZeRO's)."""
    return tuple(s for s in ALL if s not in exclude and job.precision.runs_under(s)
                 and (s is not Strategy.MP or job.gpus_per_node >= 2))


def fits(job: Job, strategy: Strategy, budget: Budget, a: Assumptions) -> bool:
    return estimate(job, strategy, a).peak <= budget.usable


def max_micro_batch(job: Job, strategy: Strategy, budget: Budget, a: Assumptions) -> int:
    """The largest micro-batch that fits (memory grows with it, so bisect)."""
    def ok(b: int) -> bool:
        return fits(dataclasses.replace(job, micro_batch=b), strategy, budget, a)

    if not ok(1):
        return 0
    low, high = 1, MAX_MICRO_BATCH
    if ok(high):
        return high
    while high - low > 1:  # ok(low) and not ok(high)
        mid = (low + high) // 2
        low, high = (mid, high) if ok(mid) else (low, mid)
    return low


def make_plan(job: Job, budget: Budget, a: Assumptions | None = None,
              exclude: frozenset[Strategy] = frozenset()) -> Plan:
    a = a or Assumptions()
    rows = tuple(Row(breakdown=(b := estimate(job, s, a)), fits=b.peak <= budget.usable,
                     max_micro_batch=max_micro_batch(job, s, budget, a),
                     host=(h := host(job, s, a)), host_fits=budget.host_fits(h.peak))
                 for s in candidates(job, exclude))
    by_strategy = {r.strategy: r for r in rows}
    ranked = [by_strategy[s] for s in PREFERENCE if s in by_strategy]
    chosen = next((r for r in ranked if r.fits and r.host_fits), None)
    return Plan(job=job, budget=budget, rows=rows, choice=chosen.strategy if chosen else None,
                reason=_reason(job, budget, ranked, chosen))


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _reason(job: Job, budget: Budget, ranked: list[Row], chosen: Row | None) -> str:
    usable = _gib(budget.usable)
    if chosen is None and any(r.fits for r in ranked):
        least_host = min((r for r in ranked if r.fits), key=lambda r: r.host.peak)
        return (f"nothing that fits {usable} per GPU fits {budget.host_memory_gib:g} GiB of host "
                f"memory per node: the smallest, {least_host.strategy.value}, needs "
                f"{_gib(least_host.host.peak)}; use fewer processes per node, another "
                "strategy, or --activation-checkpointing")
    if chosen is None:
        least = min(ranked, key=lambda r: r.breakdown.peak)
        kahan = ", --precision bf16-kahan (12 bytes per parameter instead of 16)" if (
            job.tuning is Tuning.FULL and job.precision is Precision.MIXED) else ""
        return (f"nothing fits {usable} per GPU at micro-batch {job.micro_batch}: the smallest, "
                f"{least.strategy.value}, needs {_gib(least.breakdown.peak)}; lower the "
                "micro-batch or sequence length, turn on activation checkpointing, use "
                f"--tuning qlora{kahan}, or add GPUs")
    skipped = ranked[:ranked.index(chosen)]
    text = (f"{chosen.strategy.value} ({WHY[chosen.strategy]}) peaks at "
            f"{_gib(chosen.breakdown.peak)} of {usable} usable per GPU at micro-batch "
            f"{job.micro_batch}; micro-batches up to {chosen.max_micro_batch} fit")
    too_big = [r for r in skipped if not r.fits]
    if too_big:
        text += "; preferred but too big: " + ", ".join(
            f"{r.strategy.value} ({_gib(r.breakdown.peak)})" for r in too_big)
    host_bound = [r for r in skipped if r.fits]  # fits the GPU, not the host
    if host_bound:
        text += (f"; preferred but over the {budget.host_memory_gib:g} GiB of host memory: "
                 + ", ".join(f"{r.strategy.value} ({_gib(r.host.peak)} per node)"
                             for r in host_bound))
    return text
