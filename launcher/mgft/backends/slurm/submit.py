"""Slurm: submit through submitit; status, logs, cancel and list through Slurm's own commands.

Thin: the side effects (submitit, squeue, sacct, scancel, scontrol, log files) are here; what
they mean is worked out in mgft.backends.slurm.{queue,logs,registry}, and what the job is in
mgft.render.slurm_job. submitit is imported only by `submit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from mgft.backends.query import JobQuery
from mgft.backends.slurm import logs as log_files
from mgft.backends.slurm import output as output_dir
from mgft.backends.slurm import queue as jobs
from mgft.backends.slurm import registry
from mgft.backends.slurm.queue import JobState
from mgft.render import slurm_job as options
from mgft.spec.errors import SubmitError
from mgft.spec.job import JobSpec, SlurmContainer

HOW_TO_REACH = ("run mgft where Slurm's commands reach the cluster (a login node; SLURM_CONF set "
                "if need be), or start a local cluster with `slurm/cluster.sh up`")
# What Slurm's commands print when they cannot talk to slurmctld or slurmdbd.
_UNREACHABLE = ("Unable to contact slurm controller", "Connection refused", "Socket timed out",
                "configuration source", "configuration file", "Zero Bytes were transmitted",
                "slurm_persist_conn_open", "Unable to establish", "Unable to connect")
_UNKNOWN_JOB = "Invalid job id"
CANCEL_WAIT_S = 90
FOLLOW_POLL_S = 0.5
STATE_POLL_S = 2.0
LIST_LIMIT = 20  # newest first; each costs a squeue and a sacct


def _slurm(*cmd: str, tolerate: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command; when Slurm cannot be reached, say so in one line."""
    if shutil.which(cmd[0]) is None:
        raise SubmitError(f"Slurm is not reachable: {cmd[0]} is not on PATH; {HOW_TO_REACH}")
    conf = os.environ.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):  # Slurm's commands would retry it for a minute
        raise SubmitError(f"Slurm is not reachable: SLURM_CONF={conf} does not exist; "
                          f"{HOW_TO_REACH}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise SubmitError(f"Slurm is not reachable: {cmd[0]} gave no answer in 60 s; "
                          f"{HOW_TO_REACH}") from None
    if proc.returncode != 0 and not any(t in proc.stderr for t in tolerate):
        # The last line is the verdict ("fatal: ..."); earlier ones are the retries behind it.
        said = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        last = said[-1].removeprefix(f"{cmd[0]}: ") if said else f"exit code {proc.returncode}"
        if any(u in proc.stderr for u in _UNREACHABLE):
            raise SubmitError(f"Slurm is not reachable: {cmd[0]}: {last}; {HOW_TO_REACH}")
        raise SubmitError(f"{cmd[0]} failed: {last}")
    return proc


# --- submit ---------------------------------------------------------------------------------

def _python(spec: JobSpec) -> str:
    """The shell words submitit runs its per-node entry point with."""
    if spec.slurm.container is SlurmContainer.NONE:
        return shlex.quote(sys.executable)  # this venv, on a filesystem the nodes share
    return " ".join(shlex.quote(w) for w in [*options.exec_prefix(spec), "python3"])


def submit(spec: JobSpec) -> int:
    _slurm("sinfo", "--noheader", "--summarize")  # reachable, before anything is written
    try:
        import submitit
    except ImportError:
        raise SubmitError("submitting to Slurm needs submitit: pip install 'mgft[slurm]' "
                          "(or render the job and run sbatch yourself: mgft render "
                          "--backend slurm ... > job.sbatch)") from None
    output = Path(os.path.abspath(spec.train.output))
    folder = output / "slurm"
    output_dir.check(output, folder, training=spec.generate is None)
    executor = submitit.SlurmExecutor(folder=folder, python=_python(spec))
    executor.update_parameters(**options.submitit_parameters(spec))
    task = options.node_task(spec)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):  # submitit prints sbatch's errors too
            job = executor.submit(task)
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError,
            submitit.core.utils.FailedSubmissionError) as err:
        lines = [ln.strip() for ln in (str(err) or said.getvalue()).splitlines() if ln.strip()]
        reason = lines[-1] if lines else type(err).__name__
        raise SubmitError(f"Slurm refused the job: {reason}") from None
    registry.record(registry.Entry(
        job_id=job.job_id, name=spec.job_name, folder=str(folder), output=str(output),
        nodes=spec.resources.nodes,
        submitted=datetime.datetime.now().isoformat(timespec="seconds")))
    print(job.job_id, flush=True)
    print(f"mgft: submitted Slurm job {job.job_id} ({spec.resources.nodes} nodes x "
          f"{spec.nproc_per_node} processes); follow it with `mgft logs {job.job_id} -f`, "
          f"check it with `mgft status {job.job_id}`", file=sys.stderr)
    return 0


# --- status ---------------------------------------------------------------------------------

def _log_files(job: JobState) -> list[Path]:
    entry = registry.find(job.job_id)
    if entry is not None and entry.name == job.name:
        return entry.log_files()
    # Not submitted by mgft from here (e.g. a rendered script through sbatch): ask Slurm,
    # which knows the paths until it forgets the job (MinJobAge).
    proc = _slurm("scontrol", "show", "job", "-o", job.job_id, tolerate=(_UNKNOWN_JOB,))
    fields = dict(w.split("=", 1) for w in proc.stdout.split() if "=" in w)
    paths = [fields.get("StdOut"), fields.get("StdErr")]
    return [Path(p) for i, p in enumerate(paths) if p and p not in paths[:i]]


def state(job_id: str) -> JobState:
    if not jobs.JOB_ID.match(job_id):
        raise SubmitError(f"job {job_id!r}: not a Slurm job id; pass the number sbatch or "
                          "`mgft submit` printed, e.g. 1234")
    queued = jobs.parse_squeue(_slurm("squeue", "--noheader", "--jobs", job_id, "--format",
                                      jobs.SQUEUE_FORMAT, tolerate=(_UNKNOWN_JOB,)).stdout, job_id)
    acct = _slurm("sacct", "--duplicates", "--allocations", "--noheader", "--parsable2",
                  "--jobs", job_id, "--format", jobs.SACCT_FIELDS,
                  tolerate=("disabled",) if queued else ())
    accounted = jobs.parse_sacct(acct.stdout, job_id)
    if queued is None and accounted is None:
        raise SubmitError(f"job {job_id}: Slurm knows no such job (neither squeue nor sacct "
                          "lists it)")
    job = queued or accounted
    assert job is not None
    if queued is not None and accounted is not None:
        job = dataclasses.replace(job, restarts=accounted.restarts)
    if job.active and job.nodelist:  # a lost node shows in sinfo, never in squeue or sacct
        nodes = _slurm("sinfo", "--Node", "--noheader", "--nodes", job.nodelist, "--format",
                       jobs.SINFO_FORMAT).stdout
        job = dataclasses.replace(job, node_trouble=jobs.node_trouble(nodes))
    entry = registry.find(job_id)
    files = _log_files(job)
    lines = list(log_files.read_lines(files)) if job.failed else []
    return dataclasses.replace(
        job, output=entry.output if entry and entry.name == job.name else None,
        logs=[str(f) for f in files if f.exists()], error_tail=jobs.error_tail(lines),
        trainer_exit_code=jobs.trainer_exit_code(lines))


def status(query: JobQuery) -> int:
    job = state(_job_id(query))
    print(json.dumps(job.to_json(), indent=1) if query.as_json else jobs.describe(job))
    return 0


def _job_id(query: JobQuery) -> str:
    assert query.name is not None, "status, logs and cancel name a job"
    return query.name


# --- logs -----------------------------------------------------------------------------------

def _write(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
    sys.stdout.flush()


def logs(query: JobQuery) -> int:
    job_id, follow, rank = _job_id(query), query.follow, query.rank
    job = state(job_id)
    files = _log_files(job)
    if not files:
        raise SubmitError(f"job {job_id}: no log files known (Slurm has forgotten where it "
                          "wrote them, and mgft did not submit it from here)")
    follower = log_files.Follower(files)

    def chosen(lines: Iterable[str]) -> Iterable[str]:
        return lines if rank is None else jobs.rank_lines(lines, rank)

    _write(chosen(follower.read()))
    active, last_check = follow and job.active, time.monotonic()
    try:
        while active:
            time.sleep(FOLLOW_POLL_S)
            _write(chosen(follower.read()))
            if time.monotonic() - last_check >= STATE_POLL_S:
                active, last_check = state(job_id).active, time.monotonic()
        if follow:
            _write(chosen(follower.read(final=True)))  # what came in while it ended
    except KeyboardInterrupt:
        return 130
    return 0


# --- cancel and list ------------------------------------------------------------------------

def cancel(query: JobQuery) -> int:
    job_id = _job_id(query)
    job = state(job_id)
    if not job.active:
        print(f"mgft: job {job_id} already ended ({job.state}); nothing to cancel")
        return 0
    _slurm("scancel", job_id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
        job = state(job_id)
        if not job.active:
            print(f"mgft: job {job_id} cancelled ({job.state})")
            return 0
    print(f"mgft: job {job_id} asked to stop; still {job.state} after {CANCEL_WAIT_S} s "
          "(its processes get SIGTERM, then SIGKILL after Slurm's KillWait)", file=sys.stderr)
    return 1


def list_jobs(query: JobQuery) -> int:
    as_json = query.as_json
    entries = registry.entries()[:LIST_LIMIT]
    found: list[JobState] = []
    for entry in entries:
        try:
            job = state(entry.job_id)
        except SubmitError as err:
            if str(err).startswith("Slurm is not reachable"):
                raise
            continue  # Slurm forgot it and has no record: nothing to show
        if job.name == entry.name:
            found.append(job)
    if as_json:
        print(json.dumps([j.to_json() for j in found], indent=1))
    elif not found:
        print("mgft: no Slurm jobs submitted with mgft from here")
    else:
        print(jobs.table(found, {e.job_id: e.submitted for e in entries}))
    return 0
