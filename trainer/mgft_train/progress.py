"""Rank 0's view of training: a rich bar on a terminal, one plain line per step in a log.

Each step shows step/total, loss, the held-out eval loss at steps that evaluate, learning
rate, tokens/s and the ETA; other ranks print nothing (their output is still kept per rank by
the launcher, for when one fails).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from mgft_train import console


class StepReporter(Protocol):
    def step(self, step: int, total: int, loss: float, lr: float, tok_s: float, *,
             eval_loss: float | None = None) -> None: ...


def format_eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_step(step: int, total: int, loss: float, lr: float, tok_s: float,
                eta_s: float | None = None, eval_loss: float | None = None) -> str:
    held_out = "" if eval_loss is None else f" eval_loss {eval_loss:.4f}"
    line = f"step {step}/{total} loss {loss:.4f}{held_out} lr {lr:.1e} tok/s {tok_s:.0f}"
    return line if eta_s is None else f"{line} eta {format_eta(eta_s)}"


class _Eta:
    """Remaining time from the mean step time of this process (a resumed run starts late)."""

    def __init__(self, start: int) -> None:
        self._start, self._t0 = start, time.perf_counter()

    def __call__(self, step: int, total: int) -> float:
        done = step - self._start
        return (time.perf_counter() - self._t0) / done * (total - step) if done > 0 else 0.0


class _Silent:
    def step(self, step: int, total: int, loss: float, lr: float, tok_s: float, *,
             eval_loss: float | None = None) -> None:
        pass


class _Plain:
    def __init__(self, eta: _Eta) -> None:
        self._eta = eta

    def step(self, step: int, total: int, loss: float, lr: float, tok_s: float, *,
             eval_loss: float | None = None) -> None:
        # Flushed (under torchrun/Slurm/k8s stdout is a pipe, and a buffered log looks hung)
        # and whole: console.py says why a line must be one write.
        console.out(format_step(step, total, loss, lr, tok_s, self._eta(step, total),
                                eval_loss))


class _Rich:
    def __init__(self, bar, task) -> None:
        self._bar, self._task = bar, task
        self._eval = ""  # the latest eval loss stays in view until the next one

    def step(self, step: int, total: int, loss: float, lr: float, tok_s: float, *,
             eval_loss: float | None = None) -> None:
        if eval_loss is not None:
            self._eval = f" eval_loss {eval_loss:.4f} (step {step})"
        self._bar.update(self._task, completed=step,
                         description=f"loss {loss:.4f}{self._eval} lr {lr:.1e} "
                         f"tok/s {tok_s:.0f}")


@contextmanager
def reporter(total: int, *, enabled: bool, start: int = 0) -> Iterator[StepReporter]:
    """`start`: steps already done before this process (a resumed run)."""
    if not enabled:
        yield _Silent()
    elif sys.stdout.isatty():
        from rich import progress as rp

        with rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(),
                         rp.MofNCompleteColumn(), rp.TimeElapsedColumn(),
                         rp.TimeRemainingColumn()) as bar:
            yield _Rich(bar, bar.add_task("starting", total=total, completed=start))
    else:
        yield _Plain(_Eta(start))
