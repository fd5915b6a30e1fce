"""Throughput from per-step records: one rule for the trainer's metrics.json and for the
benchmarks that compare it with other trainers (torch-free, so they can import it)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def steady_tokens_per_s(step_s: Sequence[float], step_tokens: Sequence[float]) -> float | None:
    """Throughput without the first fifth of the steps (at most 5): the first steps pay for
    allocator growth, kernel selection and communicator set-up."""
    skip = min(5, len(step_s) // 5)
    seconds = sum(step_s[skip:])
    return sum(step_tokens[skip:]) / seconds if seconds > 0 else None


def median_tokens_per_s(step_s: Sequence[float], step_tokens: Sequence[float]) -> float | None:
    """The median step's throughput: robust to a few stalled steps (a shared host, a
    collective waiting on a slow peer), which dominate a mean over a short run."""
    rates = [t / s for t, s in zip(step_tokens, step_s, strict=True) if s > 0]
    return statistics.median(rates) if rates else None
