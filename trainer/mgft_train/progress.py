"""Rank 0's view of training: a rich bar on a terminal, one plain line per step in a log."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class StepReporter(Protocol):
    def step(self, step: int, total: int, loss: float, lr: float, tok_s: float) -> None: ...


def format_step(step: int, total: int, loss: float, lr: float, tok_s: float) -> str:
    return f"step {step}/{total} loss {loss:.4f} lr {lr:.1e} tok/s {tok_s:.0f}"


class _Silent:
    def step(self, step: int, total: int, loss: float, lr: float, tok_s: float) -> None:
        pass


class _Plain:
    def step(self, step: int, total: int, loss: float, lr: float, tok_s: float) -> None:
        # flush: under torchrun/Slurm/k8s stdout is a pipe, and a buffered log looks hung.
        print(format_step(step, total, loss, lr, tok_s), flush=True)


class _Rich:
    def __init__(self, bar, task) -> None:
        self._bar, self._task = bar, task

    def step(self, step: int, total: int, loss: float, lr: float, tok_s: float) -> None:
        self._bar.update(self._task, completed=step,
                         description=f"loss {loss:.4f} lr {lr:.1e} tok/s {tok_s:.0f}")


@contextmanager
def reporter(total: int, *, enabled: bool) -> Iterator[StepReporter]:
    if not enabled:
        yield _Silent()
    elif sys.stdout.isatty():
        from rich import progress as rp

        with rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(),
                         rp.MofNCompleteColumn(), rp.TimeElapsedColumn(),
                         rp.TimeRemainingColumn()) as bar:
            yield _Rich(bar, bar.add_task("starting", total=total))
    else:
        yield _Plain()
