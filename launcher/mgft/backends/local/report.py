"""How a local job ended, said on the console in the fewest lines that hold the reason.

torchrun's own report of a failure (its traceback and the ChildFailedError summary) stays in
`<log dir>/torchrun.log`; the console ends with the failing rank's reason, and mgft exits with
the trainer's code (2 bad input, 75 stopped at a checkpoint), or 128 + N for signal N.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

from mgft.contract.exitcodes import PREEMPTED, USAGE
from mgft.hw import host_memory
from mgft.node.failure import FailureScan, rank_stderr_tail, signal_name

Kept = Callable[[], str]  # what a rerun resumes from, said as the end of a sentence


def say(text: str) -> None:
    print(f"mgft: {text}", file=sys.stderr, flush=True)


def kept_checkpoint(output: str) -> str:
    from mgft_train import checkpoint  # torch-free

    latest = checkpoint.latest(output)
    if latest is None:
        return "no checkpoint had been written, so rerunning the same command starts again"
    step = int(latest.name.split("-")[-1])
    return (f"the last checkpoint, step {step} in {latest}, is kept: rerun the same command to "
            "resume from it")


def kept_completions(output: str) -> str:
    return (f"the completions written so far are kept in {output}: rerun the same command to "
            "finish the rest")


def preempted(trainer_line: str, shown: bool) -> int:
    """The trainer stopped at a checkpoint; `trainer_line` is its "stopped by ... (exit 75)"."""
    if not shown:  # torchrun ended before it had copied the line to the console
        print(trainer_line.split("]:", 1)[-1], flush=True)
    return PREEMPTED


def stopped(sig: signal.Signals, trainer_line: str | None, shown: bool, kept: Kept) -> int:
    """After mgft passed `sig` on."""
    if sig is signal.SIGTERM and trainer_line is not None:
        return preempted(trainer_line, shown)
    what = "interrupted (Ctrl-C)" if sig is signal.SIGINT else f"stopped by {sig.name}"
    before = " before the trainer could save a checkpoint" if sig is signal.SIGTERM else ""
    say(f"{what}{before}; {kept()}")
    return 128 + sig


def failed(scan: FailureScan, log_dir: str, streamed_rank: int,
           oom_kills_before: int | None, planned_host: float | None = None) -> int:
    """A worker failed; torchrun's summary (in `scan`) says which and with what code.
    `planned_host`: the plan's host memory for this machine in bytes, when it is known."""
    code, rank, local = scan.exit_code, scan.rank, scan.local_rank
    assert code is not None
    who = f"rank {rank}" if rank is not None else "a rank"
    logs = f"every rank's output is under {log_dir}"
    name = signal_name(code)
    if name is not None:
        cause = _kill_cause(code, oom_kills_before, planned_host)
        say(f"{who} was killed by {name} (exit {code}){cause}; {logs}")
        return 128 - code
    tail = rank_stderr_tail(log_dir, local) if local is not None else None
    if local is not None and local == streamed_rank:
        if code != USAGE:  # a crash: its traceback is above, its last line says what
            reason = _last_line(tail)
            say(f"{who} failed with exit code {code}{': ' + reason if reason else ''}; {logs}")
        # bad input: the rank's own one-line reason is already the last line shown
        return code
    if tail is None:
        say(f"{who} failed with exit code {code} and wrote nothing to stderr; {logs}")
        return code
    path, lines = tail
    say(f"{who} (local rank {local}) failed first, with exit code {code}; {logs}; the end of "
        f"{path}:")
    for line in lines:
        print(f"  [{local}] {line}", file=sys.stderr)
    return code


def torchrun_failed(code: int, own_log: Path, lines: int = 15) -> int:
    """torchrun failed without a worker failing (bad arguments, no free port, ...)."""
    say(f"torchrun exited with code {code} before any worker failed; the end of {own_log}:")
    try:
        tail = own_log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        tail = []
    for line in tail:
        print(f"  {line}", file=sys.stderr)
    return code


def _kill_cause(code: int, oom_kills_before: int | None,
                planned_host: float | None = None) -> str:
    """SIGKILL with no one asking for it is the kernel's out-of-memory killer, as a rule;
    the cgroup's OOM-kill count turns "most likely" into "it was"."""
    if -code != signal.SIGKILL:
        return ""
    after = host_memory.oom_kills()
    confirmed = oom_kills_before is not None and after is not None and after > oom_kills_before
    who = "the kernel's out-of-memory killer" if confirmed else \
        "most likely the kernel's out-of-memory killer"
    total = host_memory.total_bytes()
    held = f" than the {host_memory.gib(total)} this machine gives it" if total else ""
    if planned_host is not None:
        held += f"; the plan puts it at {host_memory.gib(int(planned_host))}"
    return (f": {who} (the job needed more host memory{held}); use fewer processes "
            "(--nproc-per-node), --activation-checkpointing, or a strategy that holds less in "
            "host memory (`mgft plan` shows each one's)")


def _last_line(tail: tuple[Path, list[str]] | None) -> str | None:
    if tail is None:
        return None
    return next((line.strip() for line in reversed(tail[1]) if line.strip()), None)
