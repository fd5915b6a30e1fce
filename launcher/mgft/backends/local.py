"""Run the rendered torchrun command on this machine and return the trainer's exit code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from mgft.errors import SubmitError
from mgft.render.local import STREAMED_RANK, LocalCommand, local_command
from mgft.spec import JobSpec
from mgft.torchrun_failure import FailureScan, rank_stderr_tail


def torchrun_path() -> str:
    """torchrun from this interpreter's environment first, so a venv's mgft uses its torch."""
    beside = Path(sys.executable).with_name("torchrun")
    found = str(beside) if beside.is_file() else shutil.which("torchrun")
    if found is None:
        raise SubmitError("torchrun not found: the local backend runs the trainer on this "
                          "machine; install it with `pip install 'mgft[train]'`")
    return found


def _pump(src: IO[str], dst: IO[str], scan: FailureScan | None) -> None:
    for line in src:
        dst.write(line)
        dst.flush()
        if scan is not None:
            scan.feed(line)


def _print_silent_rank(log_dir: str, local_rank: int) -> None:
    """Only rank 0 streams to the console: show why another rank failed first.

    Without this its message is only in a log file, and rank 0, stopped by torchrun on that
    failure, may not have printed its own.
    """
    found = rank_stderr_tail(log_dir, local_rank)
    if found is None:
        return
    path, tail = found
    print(f"mgft: local rank {local_rank} failed first; the end of {path}:", file=sys.stderr)
    for line in tail:
        print(f"  [{local_rank}] {line}", file=sys.stderr)


def run(command: LocalCommand, cwd: Path | None = None) -> int:
    argv = [torchrun_path(), *command.argv[1:]]
    env = os.environ | command.env
    if sys.stdout.isatty():
        env.setdefault("TTY_COMPATIBLE", "1")  # rich draws live progress bars through the pipe
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1, errors="replace")
    assert proc.stdout is not None and proc.stderr is not None
    scan = FailureScan()
    threads = [threading.Thread(target=_pump, args=(proc.stdout, sys.stdout, None)),
               threading.Thread(target=_pump, args=(proc.stderr, sys.stderr, scan))]
    for t in threads:
        t.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(2)  # torchrun forwards SIGINT to its workers and cleans up
        code = proc.wait()
    for t in threads:
        t.join()
    if code != 0 and scan.exit_code is not None:
        if scan.local_rank not in (None, STREAMED_RANK):
            _print_silent_rank(command.log_dir, scan.local_rank)
        where = f" (rank {scan.rank})" if scan.rank is not None else ""
        print(f"mgft: trainer exited with code {scan.exit_code}{where}; every rank's output "
              f"is under {command.log_dir}", file=sys.stderr)
        return scan.exit_code
    return code


def submit(spec: JobSpec) -> int:
    from mgft import gpus, nccl
    from mgft.envcontract import comm_vars

    nccl.check_environment(spec, comm_vars())
    choice = gpus.choose_for(spec)  # bad or busy GPUs: SpecError, exit 2, nothing started
    if choice is not None:
        for warning in choice.warnings:
            print(f"mgft: warning: {warning}", file=sys.stderr)
        print(f"mgft: {choice.summary()}", file=sys.stderr)
    return run(local_command(spec, choice.visible if choice else None))
