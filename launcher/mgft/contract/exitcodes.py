"""Exit codes shared by the trainer and the backends that restart or requeue it."""

from __future__ import annotations

OK = 0
FAILED = 1  # a crash: restarting will not help without a change
USAGE = 2  # bad input: the message names the option, the value and the fix
# Stopped on SIGTERM/SIGUSR2 after writing a checkpoint; run again with the same --output to
# resume. 75 is EX_TEMPFAIL from sysexits.h: "temporary failure, try again later".
PREEMPTED = 75
