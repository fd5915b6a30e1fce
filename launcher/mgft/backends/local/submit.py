"""Run the rendered torchrun command on this machine and return the trainer's exit code.

torchrun runs in a process group of its own, to which mgft passes every SIGTERM, SIGHUP and
SIGINT it gets, and mgft returns only once that group is gone (`mgft.backends.local.signals`). The
console shows local rank 0's output and, at the end, why the job stopped
(`mgft.backends.local.report`); torchrun's own log goes to `<output>/logs/torchrun.log`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import IO

from mgft.backends.local import report as local_report
from mgft.backends.local.signals import Forwarder, die_with_parent, forwarding, wait_group
from mgft.contract.env import TORCHRUN_SHUTDOWN_TIMEOUT
from mgft.contract.exitcodes import PREEMPTED
from mgft.hw import host_memory
from mgft.node.failure import FailureScan, is_preempted_line, is_worker_line, preempted_line
from mgft.node.torchrun import TorchrunNotFound, torchrun_path
from mgft.render.local import STREAMED_RANK, LocalCommand, local_command
from mgft.spec.errors import SubmitError
from mgft.spec.job import JobSpec

TORCHRUN_LOG = "torchrun.log"
# How long the workers may take to finish their step and write a checkpoint after SIGTERM
# before torchrun (and then mgft) kills them; torchrun's own default, 30 s, is shorter than
# the save of a large model's optimizer state.
SAVE_GRACE_S = 600


class _Console:
    """Where torchrun's output goes: the streamed worker's lines to the console, torchrun's
    own lines (log, tracebacks, failure summary) to `<log dir>/torchrun.log`."""

    def __init__(self, own_log: IO[str], stops: Forwarder) -> None:
        self.own_log = own_log
        self.stops = stops
        self.scan = FailureScan()
        self.trainer_stop_line: str | None = None
        self._lock = threading.Lock()

    def pump(self, src: IO[str], dst: IO[str]) -> None:
        for line in src:  # read to the end whatever happens, or torchrun blocks on a full pipe
            if not is_worker_line(line):
                with self._lock:
                    self.own_log.write(line)
                    self.own_log.flush()
                    self.scan.feed(line)
                continue
            if is_preempted_line(line):
                self.trainer_stop_line = line.rstrip("\n")
            if self.stops.interrupted:
                continue  # Ctrl-C: mgft's one line says what was kept; the rest is in the logs
            with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) or pipe
                dst.write(line)
                dst.flush()


def run(command: LocalCommand, cwd: Path | None = None,
        kept: local_report.Kept | None = None, planned_host: float | None = None) -> int:
    """Run torchrun to the end and return the trainer's exit code (see `local_report`);
    `planned_host`: the plan's host memory in bytes, for the report of a SIGKILLed worker."""
    try:
        argv = [torchrun_path(), *command.argv[1:]]
    except TorchrunNotFound as err:
        raise SubmitError(f"{err} (the local backend runs the trainer on this machine)") from None
    env = os.environ | command.env
    env.setdefault(TORCHRUN_SHUTDOWN_TIMEOUT, str(SAVE_GRACE_S))
    if sys.stdout.isatty():
        env.setdefault("TTY_COMPATIBLE", "1")  # rich draws live progress bars through the pipe
    log_dir = Path(command.log_dir)
    own_log_path = log_dir / TORCHRUN_LOG
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        own_log_path.open("a").close()  # a read-only --output that holds logs/ already
    except OSError as err:
        raise SubmitError(f"--output {log_dir.parent}: cannot create "
                          f"{err.filename or log_dir} there ({err.strerror}); pick a "
                          "directory you can write to") from None
    oom_kills_before = host_memory.oom_kills()
    with own_log_path.open("a") as own_log, forwarding() as stops:
        own_log.write(f"=== mgft {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(argv)}\n")
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1, errors="replace",
                                start_new_session=True, preexec_fn=die_with_parent)
        stops.attach(proc.pid)  # torchrun leads the new session's process group
        console = _Console(own_log, stops)
        threads = [threading.Thread(target=console.pump, args=(proc.stdout, sys.stdout)),
                   threading.Thread(target=console.pump, args=(proc.stderr, sys.stderr))]
        for t in threads:
            t.start()
        code = proc.wait()
        for t in threads:
            t.join()
        # torchrun may leave before its workers (a second signal during its shutdown).
        wait_group(proc.pid, SAVE_GRACE_S)
    shown = console.trainer_stop_line is not None
    stop_line = console.trainer_stop_line or preempted_line(command.log_dir, STREAMED_RANK)
    if stops.first is not None:
        return local_report.stopped(stops.first, stop_line, shown,
                                    kept or (lambda: "rerun the same command to resume"))
    if code == 0:
        return 0
    if console.scan.exit_code == PREEMPTED and stop_line is not None:
        return local_report.preempted(stop_line, shown)  # a rank got SIGTERM or SIGUSR2 itself
    if console.scan.exit_code is not None:
        return local_report.failed(console.scan, command.log_dir, STREAMED_RANK,
                                   oom_kills_before, planned_host)
    return local_report.torchrun_failed(code, own_log_path)


def submit(spec: JobSpec) -> int:
    from mgft.backends.local import inputs as local_inputs
    from mgft.comm import nccl
    from mgft.contract.env import comm_vars
    from mgft.hw import gpus

    planned = local_inputs.check(spec)  # what the trainer or this host would refuse, now
    nccl.check_environment(spec, comm_vars())
    choice = gpus.choose_for(spec)  # bad or busy GPUs: SpecError, exit 2, nothing started
    if choice is not None:
        for warning in choice.warnings:
            print(f"mgft: warning: {warning}", file=sys.stderr)
        print(f"mgft: {choice.summary()}", file=sys.stderr)
    output = spec.train.output
    kept = (partial(local_report.kept_completions, output) if spec.generate is not None
            else partial(local_report.kept_checkpoint, output))
    return run(local_command(spec, choice.visible if choice else None), kept=kept,
               planned_host=planned.peak if planned is not None else None)
