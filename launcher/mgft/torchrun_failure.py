"""torchrun exits 1 whichever way its workers failed; its failure summary says how they did.

Read by the local backend and by each Slurm node task, which need the trainer's own exit code
(2 bad input, 75 stopped at a checkpoint) rather than torchrun's.
"""

from __future__ import annotations

import re

# torchrun reports the first failed worker as "Root Cause ... exitcode  : 3 (pid: 123)".
_ROOT_CAUSE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
_FAILED_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")


class FailureScan:
    """Feed it torchrun's stderr line by line; it keeps the first failed worker's code."""

    def __init__(self) -> None:
        self.in_root_cause = False
        self.exit_code: int | None = None
        self.rank: int | None = None

    def feed(self, line: str) -> None:
        if "Root Cause" in line:
            self.in_root_cause = True
        elif self.in_root_cause and self.rank is None and (m := _FAILED_RANK.match(line)):
            self.rank = int(m.group(1))
        elif self.in_root_cause and self.exit_code is None and (m := _ROOT_CAUSE.match(line)):
            self.exit_code = int(m.group(1))
