"""The trainer's console: every line it says goes out whole, in one write.

torchrun --tee (and Slurm/k8s log collection) reads each rank's stdout and stderr as they
grow and prefixes every line it reads ("[rank0]:"). print() writes the text and its newline
apart, and with PYTHONUNBUFFERED each piece reaches the file on its own; a reader between the
two takes half a line and prefixes the rest as a line of its own (a CI run's Slurm rank log
held '... eta 0:00:00[rank0]:'). Text and newline in one write, then a flush, keep each line
whole and in order with whatever else the process writes. Text of several lines (the end-of-
run summary) goes out as one block.

Only the trainer's own lines go through here; third-party output is left as it comes.
"""

from __future__ import annotations

import sys
from typing import TextIO


def out(text: str) -> None:
    """A line (or block of lines) on stdout."""
    _line(sys.stdout, text)


def err(text: str) -> None:
    """A line (or block of lines) on stderr."""
    _line(sys.stderr, text)


def _line(stream: TextIO, text: str) -> None:
    # The stream is looked up at each call, so pytest's capture and redirect_stdout see it.
    stream.write(text + "\n")
    stream.flush()
