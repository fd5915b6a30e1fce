"""Preemption: SIGTERM or SIGUSR2 asks for a checkpoint and a clean exit with code 75.

The handler only sets a flag; the loop all-reduces it with each step's loss, so when the
signal reaches just some ranks (a scheduler signalling one node first), every rank still
stops after the same step, writes its part of the checkpoint, and exits with
`mgft.contract.exitcodes.PREEMPTED` (75, EX_TEMPFAIL). Rerunning with the same argv resumes.
SIGTERM is what Kubernetes and torchrun send on shutdown; SIGUSR2 is Slurm's usual
`--signal` choice for "time is nearly up".

SIGINT (Ctrl-C) stops the process at once, with no checkpoint and no traceback: the last
complete checkpoint is what a rerun resumes from (`mgft submit` says which). Python's
KeyboardInterrupt would instead surface wherever the rank happened to be, as one traceback
per rank, and not before a collective that waits on a rank already gone returns.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
_received: list[int] = []


def _handler(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)


def install() -> None:
    """Call once, early: a signal before this kills the process without a checkpoint."""
    _received.clear()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _handler)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def requested() -> bool:
    return bool(_received)


def received() -> list[str]:
    """Each signal once, in the order first received: under torchrun or Slurm a rank often
    gets the same one twice (from the scheduler, then from torchrun passing it on)."""
    return [signal.Signals(s).name for s in dict.fromkeys(_received)]


def ignore() -> None:
    """After the checkpoint: exit 75 even if another stop signal arrives during shutdown
    (the interpreter restores default handlers as it exits, and SIGTERM would then kill)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
