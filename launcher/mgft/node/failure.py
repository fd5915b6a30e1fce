"""torchrun exits 1 whichever way its workers failed; its failure summary says how they did.

Read by the local backend and by each Slurm node task, which need the trainer's own exit code
(2 bad input, 75 stopped at a checkpoint) rather than torchrun's. The local backend also
tells torchrun's own lines (its log, tracebacks and failure summary: kept in a file) from
the lines of the worker it streams (shown), and finds the trainer's last word in its logs.
"""

from __future__ import annotations

import re
import signal
from collections import deque
from pathlib import Path

from mgft.contract.exitcodes import PREEMPTED

# torchrun reports the first failed worker as
#   rank      : 1 (local_rank: 1)
#   exitcode  : 3 (pid: 123)
_ROOT_CAUSE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
_FAILED_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)(?:\s*\(local_rank:\s*(\d+)\))?")
# torchrun --tee prefixes each line it copies from a worker with "[<role><local rank>]:";
# its failure summary numbers the failures "[0]:", with no role.
_WORKER_LINE = re.compile(r"^\[[A-Za-z_-]+\d+\]:")
# The trainer's last line when it stopped at a checkpoint (mgft_train.main):
#   mgft-train: stopped by SIGTERM after step 3 of 40; checkpoint in ...; ... (exit 75)
_PREEMPTED_LINE = re.compile(rf"mgft-train: stopped by .*\(exit {PREEMPTED}\)\s*$")
# What torchrun logs when the barrier its agents pass on the way out fails: on a multi-node
# job, after this node's workers have all finished, when the node whose torchrun held the
# rendezvous store exits first. torchrun then exits as its workers did; the DistNetworkError,
# its C++ frames and "failed to shutdown the rendezvous" around this line say nothing wrong.
_EXIT_BARRIER = "Error waiting on exit barrier"
EXIT_BARRIER_NOTE = ("torchrun's exit-barrier error above (DistNetworkError, C++ frames) is "
                     "harmless: every rank on this node finished, and the node holding the "
                     "rendezvous store had already exited")


class FailureScan:
    """Feed it torchrun's stderr line by line; it keeps the first failed worker's code."""

    def __init__(self) -> None:
        self.in_root_cause = False
        self.exit_code: int | None = None
        self.rank: int | None = None
        self.local_rank: int | None = None
        self.exit_barrier_error = False  # torchrun's, after every worker here finished

    def feed(self, line: str) -> None:
        if _EXIT_BARRIER in line:
            self.exit_barrier_error = True
        elif "Root Cause" in line:
            self.in_root_cause = True
        elif self.in_root_cause and self.rank is None and (m := _FAILED_RANK.match(line)):
            self.rank = int(m.group(1))
            self.local_rank = int(m.group(2)) if m.group(2) is not None else None
        elif self.in_root_cause and self.exit_code is None and (m := _ROOT_CAUSE.match(line)):
            self.exit_code = int(m.group(1))


def is_worker_line(line: str) -> bool:
    """A line torchrun copied from a worker, rather than one of its own."""
    return _WORKER_LINE.match(line) is not None


def is_preempted_line(line: str) -> bool:
    return _PREEMPTED_LINE.search(line) is not None


def rank_stderr_tail(log_dir: str | Path, local_rank: int, lines: int = 20
                     ) -> tuple[Path, list[str]] | None:
    """The last lines a local rank wrote to stderr in the newest torchrun run under `log_dir`.

    torchrun writes `<log_dir>/<run id>/attempt_<n>/<local rank>/stderr.log`. None when that
    rank left no stderr (the log dir is gone, or the rank wrote nothing).
    """
    return rank_log_tail(log_dir, local_rank, "stderr", lines)


def rank_log_tail(log_dir: str | Path, local_rank: int, stream: str, lines: int = 20
                  ) -> tuple[Path, list[str]] | None:
    logs = [p for p in Path(log_dir).glob(f"*/attempt_*/{local_rank}/{stream}.log")
            if p.is_file()]
    if not logs:
        return None
    newest = max(logs, key=lambda p: p.stat().st_mtime_ns)
    with newest.open(errors="replace") as f:
        tail = [line.rstrip("\n") for line in deque(f, maxlen=lines)]
    return (newest, tail) if any(line.strip() for line in tail) else None


def preempted_line(log_dir: str | Path, local_rank: int) -> str | None:
    """The trainer's "stopped by ... (exit 75)" line, if the rank's newest stdout ends so."""
    found = rank_log_tail(log_dir, local_rank, "stdout", lines=5)
    if found is None:
        return None
    return next((line for line in reversed(found[1]) if is_preempted_line(line)), None)


def signal_name(code: int) -> str | None:
    """torchrun reports a worker that a signal ended with the signal's negated number."""
    if code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
