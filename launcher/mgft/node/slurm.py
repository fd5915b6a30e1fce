"""What runs once on each node of a Slurm job: torchrun, with preemption handled.

Both ways of submitting run this code through `mgft.node.slurm_task.NodeTask`: `mgft submit
--backend slurm` pickles one for submitit, the rendered sbatch script runs
`srun python3 -m mgft.node.slurm_task ...`.

Signals. Slurm signals every process of a job step: USR2 before the time limit or from
`scancel --signal=USR2`, TERM from scancel, `scontrol requeue` or preemption.
- torchrun turns TERM into TERM to its workers. It does not handle USR2, whose default action
  would kill it and orphan its workers, so it starts here with USR2 ignored and this task
  sends USR2 to the workers itself (the trainer installs its own handler, which replaces the
  inherited "ignore"). A worker may so get USR2 twice, and TERM twice (Slurm, torchrun): the
  trainer's handler must only note the request.
- This task outlives TERM until torchrun is done, so the workers can finish their checkpoint
  within Slurm's KillWait; if it died first, Slurm would end the step and kill them.
- The trainer exits 75 (mgft.contract.exitcodes.PREEMPTED) once its checkpoint is complete. Unless
  Slurm is ending the job (TERM: it requeues or cancels it itself), node 0 then requeues it,
  and the requeued run resumes.
  Other nodes exit 0, so that srun's --kill-on-bad-exit leaves node 0 time to do so.

Standard library and light mgft modules only: this runs on compute nodes and in containers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from mgft.contract.env import SlurmEnv
from mgft.contract.exitcodes import OK, PREEMPTED
from mgft.node.failure import EXIT_BARRIER_NOTE, FailureScan

# A rendezvous port per job, so jobs sharing a node never collide on torchrun's fixed 29500.
RDZV_PORT_BASE = 20000
RDZV_PORT_SPAN = 20000
POLL_S = 0.2
PREFIX = "mgft-node:"


def rdzv_port(job_id: str) -> int:
    return RDZV_PORT_BASE + int(job_id) % RDZV_PORT_SPAN


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    torchrun_code: int
    trainer_code: int | None  # the first failed worker's own code, from torchrun's summary
    failed_rank: int | None
    signals: frozenset[int]  # what this task received while torchrun ran
    ranks: tuple[int, ...]  # the global ranks this node ran
    exit_barrier_error: bool = False  # torchrun's noise on the way out (node.failure)

    @property
    def preempted(self) -> bool:
        """The trainer stopped at a complete checkpoint."""
        return self.trainer_code == PREEMPTED

    @property
    def terminated(self) -> bool:
        """Slurm is ending this job (scancel, scontrol requeue, time limit, preemption)."""
        return signal.SIGTERM in self.signals

    @property
    def exit_code(self) -> int:
        if self.torchrun_code == 0:
            return OK
        return self.trainer_code if self.trainer_code is not None else self.torchrun_code


def log(message: str) -> None:
    sys.stderr.write(f"{PREFIX} {message}\n")
    sys.stderr.flush()


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after the last ')'
        # are fixed: state, then the parent pid.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def _rank(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def workers(torchrun_pid: int) -> dict[int, int]:
    """torchrun's worker processes on this node: pid -> global rank (from their RANK)."""
    found = {pid: _rank(pid) for pid in _children(torchrun_pid)}
    return {pid: rank for pid, rank in found.items() if rank is not None}


def _pump(src: IO[str], scan: FailureScan) -> None:
    for line in src:
        sys.stderr.write(line)
        sys.stderr.flush()
        scan.feed(line)


def _ignore_usr2() -> None:  # runs in torchrun's process before exec; "ignore" survives exec
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def run(argv: Sequence[str], env: Mapping[str, str], *, nproc: int | None = None) -> Outcome:
    """Run torchrun to the end, passing USR2 on to its workers; say how it ended."""
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)  # acted on in the loop below, never inside the handler

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(list(argv), env=dict(env), stderr=subprocess.PIPE, text=True,
                                bufsize=1, errors="replace", preexec_fn=_ignore_usr2)
        assert proc.stderr is not None
        scan = FailureScan()
        pump = threading.Thread(target=_pump, args=(proc.stderr, scan), daemon=True)
        pump.start()
        ranks: tuple[int, ...] = ()
        forwarded = 0
        # poll(), never wait(): a signal handler must not find Popen's wait lock held.
        while proc.poll() is None:
            usr2 = received.count(signal.SIGUSR2)
            if usr2 > forwarded or not ranks:
                running = workers(proc.pid)
                if not ranks and running and (nproc is None or len(running) == nproc):
                    ranks = tuple(sorted(running.values()))
                    log(f"{socket.gethostname()} runs ranks {','.join(map(str, ranks))}")
                if usr2 > forwarded and running:
                    for pid in running:
                        _send(pid, signal.SIGUSR2)
                    log(f"passed USR2 on to ranks {','.join(map(str, sorted(running.values())))}")
                    forwarded = usr2
            time.sleep(POLL_S)
        pump.join(timeout=10)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return Outcome(torchrun_code=proc.returncode, trainer_code=scan.exit_code,
                   failed_rank=scan.rank, signals=frozenset(received), ranks=ranks,
                   exit_barrier_error=scan.exit_barrier_error)


def _send(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.kill(pid, sig)


def scontrol_requeue(job_id: str) -> None:
    subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, text=True,
                   timeout=60)


def settle(outcome: Outcome, slurm: SlurmEnv, requeue: Callable[[str], None]) -> int:
    """This node task's exit code, after requeueing the job if it stopped at a checkpoint."""
    if outcome.terminated:
        # torchrun stops its workers with TERM itself and then reports no worker codes. A
        # worker that failed first (a peer lost) was past checkpointing: it is named.
        if outcome.trainer_code not in (None, PREEMPTED):
            where = f" on rank {outcome.failed_rank}" if outcome.failed_rank is not None else ""
            log(f"Slurm is ending this job (SIGTERM) after the trainer exited with code "
                f"{outcome.trainer_code}{where}; no checkpoint was saved on the way out, so a "
                "requeued or resubmitted job resumes from the latest one written before")
        else:
            log("Slurm is ending this job (SIGTERM); the trainer checkpoints on SIGTERM if all "
                "its ranks can still finish the step, and a requeued or resubmitted job "
                "resumes from the latest complete checkpoint")
        return outcome.exit_code
    if not outcome.preempted:
        if outcome.exit_code != OK:
            where = f" on rank {outcome.failed_rank}" if outcome.failed_rank is not None else ""
            log(f"trainer exited with code {outcome.exit_code}{where}")
        elif outcome.exit_barrier_error:
            log(EXIT_BARRIER_NOTE)
        return outcome.exit_code
    if slurm.node_id != 0:
        return OK  # node 0 requeues the job
    try:
        requeue(slurm.job_id)
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        log(f"the trainer saved a checkpoint but requeueing job {slurm.job_id} failed "
            f"({str(detail).strip()}); submit the same job again to resume")
        return PREEMPTED
    log(f"the trainer saved a checkpoint; requeued job {slurm.job_id}, which resumes from it")
    return OK
