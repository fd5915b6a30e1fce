"""torchrun exits 1 whichever way its workers failed; its failure summary says how they did.

Read by the local backend and by each Slurm node task, which need the trainer's own exit code
(2 bad input, 75 stopped at a checkpoint) rather than torchrun's.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

# torchrun reports the first failed worker as
#   rank      : 1 (local_rank: 1)
#   exitcode  : 3 (pid: 123)
_ROOT_CAUSE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
_FAILED_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)(?:\s*\(local_rank:\s*(\d+)\))?")


class FailureScan:
    """Feed it torchrun's stderr line by line; it keeps the first failed worker's code."""

    def __init__(self) -> None:
        self.in_root_cause = False
        self.exit_code: int | None = None
        self.rank: int | None = None
        self.local_rank: int | None = None

    def feed(self, line: str) -> None:
        if "Root Cause" in line:
            self.in_root_cause = True
        elif self.in_root_cause and self.rank is None and (m := _FAILED_RANK.match(line)):
            self.rank = int(m.group(1))
            self.local_rank = int(m.group(2)) if m.group(2) is not None else None
        elif self.in_root_cause and self.exit_code is None and (m := _ROOT_CAUSE.match(line)):
            self.exit_code = int(m.group(1))


def rank_stderr_tail(log_dir: str | Path, local_rank: int, lines: int = 20
                     ) -> tuple[Path, list[str]] | None:
    """The last lines a local rank wrote to stderr in the newest torchrun run under `log_dir`.

    torchrun writes `<log_dir>/<run id>/attempt_<n>/<local rank>/stderr.log`. None when that
    rank left no stderr (the log dir is gone, or the rank wrote nothing).
    """
    logs = [p for p in Path(log_dir).glob(f"*/attempt_*/{local_rank}/stderr.log") if p.is_file()]
    if not logs:
        return None
    newest = max(logs, key=lambda p: p.stat().st_mtime_ns)
    with newest.open(errors="replace") as f:
        tail = [line.rstrip("\n") for line in deque(f, maxlen=lines)]
    return (newest, tail) if any(line.strip() for line in tail) else None
