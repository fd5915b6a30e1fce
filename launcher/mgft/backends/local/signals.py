"""Stop signals sent to mgft reach the whole job, and mgft outlives the job.

`mgft submit --backend local` starts torchrun in a session of its own, so torchrun and its
workers form one process group that a terminal's Ctrl-C does not reach directly. Every
SIGTERM, SIGHUP and SIGINT mgft gets is passed on to that group (torchrun and each worker get
it once, from here), and mgft waits until no process of the group is left: nothing keeps
training unattended after mgft has returned. Should mgft itself be killed outright, the
kernel sends torchrun SIGTERM (`die_with_parent`), which stops the workers at a checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
INTERRUPTS = frozenset({signal.SIGINT, signal.SIGHUP})  # stop now, no new checkpoint
_PR_SET_PDEATHSIG = 1
POLL_S = 0.2


class Forwarder:
    """What mgft received, and the process group it passes it on to."""

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        self.group: int | None = None

    @property
    def first(self) -> signal.Signals | None:
        return self.received[0] if self.received else None

    @property
    def interrupted(self) -> bool:
        """Ctrl-C or a hangup: the job is being stopped without a new checkpoint."""
        return any(s in INTERRUPTS for s in self.received)

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum))
        self._send(signum)

    def attach(self, group: int) -> None:
        """From now on signals go to `group`; one that came while it started goes now."""
        self.group = group
        for sig in self.received:
            self._send(sig)

    def _send(self, sig: int) -> None:
        if self.group is not None:
            with contextlib.suppress(ProcessLookupError):  # the group has already ended
                os.killpg(self.group, sig)


@contextlib.contextmanager
def forwarding() -> Iterator[Forwarder]:
    """Install the handlers for the block; the previous ones come back after it."""
    forwarder = Forwarder()
    if threading.current_thread() is not threading.main_thread():
        yield forwarder  # Python delivers signals to the main thread only: nothing to install
        return
    previous = {sig: signal.signal(sig, forwarder.handle) for sig in FORWARDED}
    try:
        yield forwarder
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM to it when mgft dies (Linux; elsewhere nothing)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def group_alive(group: int) -> bool:
    """Whether any process of the group is still running (zombies awaiting their reaper
    do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; after the last ')' come state,
        # parent pid and process group.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == group and fields[0] not in (b"Z", b"X"):
            return True
    return False


def wait_group(group: int, timeout: float) -> bool:
    """Wait for the group's last process; SIGKILL what is left after `timeout` seconds.
    True when it ended by itself."""
    deadline = time.monotonic() + timeout
    while group_alive(group):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            return False
        time.sleep(POLL_S)
    return True
