"""A Slurm job's state, read from squeue (jobs Slurm still holds) or sacct (jobs that ended),
and what `mgft status` and `mgft list` say about it. Pure: the commands run in the backend."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

SQUEUE_FORMAT = "%i|%j|%T|%M|%N|%r"
SACCT_FIELDS = "JobID,JobName,State,ExitCode,Elapsed,NodeList"
# sinfo --Node --noheader --nodes <the job's nodes> --format: each node's name, state (sinfo's
# long names, e.g. "mixed", "completing*", "down*") and the reason Slurm gives for it.
SINFO_FORMAT = "%N|%T|%E"
# Node states that mean trouble for the jobs on a node (draining does not: its jobs finish).
# A "*" after any state means slurmctld has lost contact with the node's slurmd (a dead
# slurmd, a lost node).
_NODE_OUT = frozenset({"down", "drained", "draining", "fail", "failing"})
# States in which a job can still change; every other state is final.
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED",
                    "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT",
                    "SUSPENDED", "STOPPED"})
FAILED = frozenset({"FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "BOOT_FAIL", "DEADLINE",
                    "PREEMPTED"})
JOB_ID = re.compile(r"^\d+(_\d+)?$")
ERROR_TAIL = 10
_RANK_LINE = re.compile(r"^\[rank(\d+)\]:")
# What mgft.node.slurm says when the trainer failed; the job's own exit code is often a signal
# (srun --kill-on-bad-exit stops the other nodes).
_TRAINER_EXIT = re.compile(r"^mgft-node: trainer exited with code (-?\d+)")


@dataclass(frozen=True, kw_only=True, slots=True)
class JobState:
    job_id: str
    name: str
    state: str
    exit_code: str | None = None  # sacct's "code:signal"
    elapsed: str = ""
    nodelist: str = ""
    reason: str = ""  # why a pending job waits
    restarts: int = 0  # requeues so far
    output: str | None = None  # from mgft's own record of the job
    logs: list[str] = field(default_factory=list)
    error_tail: list[str] = field(default_factory=list)
    trainer_exit_code: int | None = None  # the first failed trainer's, from the node logs
    node_trouble: list[str] = field(default_factory=list)  # `NodeState.trouble` of its nodes

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def failed(self) -> bool:
        return self.state in FAILED

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"active": self.active}


def parse_squeue(text: str, job_id: str) -> JobState | None:
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) == 6 and parts[0] == job_id:
            jid, name, state, elapsed, nodes, reason = parts
            return JobState(job_id=jid, name=name, state=state, elapsed=elapsed,
                            nodelist=nodes if nodes != "(null)" else "",
                            reason=reason if reason not in ("None", "(null)") else "")
    return None


def parse_sacct(text: str, job_id: str) -> JobState | None:
    """sacct -D -X -P: one row per run of the job (a requeue adds one); the last is current."""
    rows = [line.split("|") for line in text.splitlines()]
    rows = [r for r in rows if len(r) == 6 and r[0] == job_id]
    if not rows:
        return None
    jid, name, state, exit_code, elapsed, nodes = rows[-1]
    return JobState(job_id=jid, name=name, state=state.split()[0], exit_code=exit_code,
                    elapsed=elapsed, nodelist=nodes if nodes != "None assigned" else "",
                    restarts=len(rows) - 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeState:
    name: str
    state: str  # sinfo's long name, with its flag suffix
    reason: str = ""

    @property
    def trouble(self) -> str | None:
        """What is wrong with the node for a job on it, if anything."""
        if self.state.endswith("*"):
            what = "is not responding"
        elif self.state.rstrip("~#!%$@^-+") in _NODE_OUT:
            what = f"is {self.state.rstrip('~#!%$@^-+')}"
        else:
            return None
        why = f", reason: {self.reason}" if self.reason else ""
        return f"node {self.name} {what} (Slurm: {self.state}{why})"


def parse_sinfo(text: str) -> list[NodeState]:
    nodes = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) == 3:
            name, state, reason = (p.strip() for p in parts)
            nodes.append(NodeState(name=name, state=state,
                                   reason=reason if reason not in ("none", "(null)") else ""))
    return nodes


def node_trouble(sinfo_text: str) -> list[str]:
    """For JobState.node_trouble: the nodes of a job that are lost or taken out of service."""
    return [t for node in parse_sinfo(sinfo_text) if (t := node.trouble) is not None]


def error_tail(lines: Iterable[str], limit: int = ERROR_TAIL) -> list[str]:
    """The last lines the trainer ranks and the node tasks wrote: where a failure explains
    itself (torchrun's own summary and submitit's traceback come after, and say less)."""
    lines = [line.rstrip("\n") for line in lines]
    ours = [line for line in lines if _RANK_LINE.match(line) or line.startswith("mgft-node:")]
    chosen = ours or [line for line in lines if line.strip()]
    return chosen[-limit:]


def trainer_exit_code(lines: Iterable[str]) -> int | None:
    for line in lines:
        if match := _TRAINER_EXIT.match(line):
            return int(match.group(1))
    return None


def rank_lines(lines: Iterable[str], rank: int) -> Iterable[str]:
    """One rank's lines, without the "[rankN]:" prefix torchrun gave them."""
    prefix = f"[rank{rank}]:"
    for line in lines:
        if line.startswith(prefix):
            yield line[len(prefix):]


def describe(job: JobState) -> str:
    head = f"job {job.job_id} ({job.name}): {job.state}"
    if job.exit_code and not job.active:
        head += f", exit code {job.exit_code.split(':')[0]}"
        if job.exit_code.split(":")[-1] not in ("", "0"):
            head += f" (signal {job.exit_code.split(':')[-1]})"
        if job.trainer_exit_code is not None:
            head += f" (the trainer's: {job.trainer_exit_code})"
    if job.elapsed:
        head += f", ran {job.elapsed}"
    if job.nodelist:
        head += f" on {job.nodelist}"
    if job.reason:
        head += f", waiting: {job.reason}"
    lines = [head, *job.node_trouble]
    if job.state == "COMPLETING" and job.node_trouble:
        lines.append("the job has ended; Slurm keeps it COMPLETING until that node answers "
                     "again or it marks the node down (after its SlurmdTimeout, 300 s by "
                     "default)")
    elif job.state == "COMPLETING" and job.nodelist:  # squeue: the nodes not yet done
        lines.append(f"the job has ended; Slurm waits for {job.nodelist} to report it")
    elif job.state == "RUNNING" and job.node_trouble:
        lines.append("Slurm cannot reach that node: the job's processes there may still run, "
                     "but once Slurm marks the node down (after its SlurmdTimeout, 300 s by "
                     "default) it ends the job (NODE_FAIL)")
    if job.restarts:
        lines.append(f"requeued {job.restarts} time{'s' if job.restarts > 1 else ''}")
    if job.output:
        lines.append(f"output: {job.output}")
    if job.logs:
        lines.append(f"logs: mgft logs {job.job_id}  ({', '.join(job.logs)})")
    if job.error_tail:
        lines.append("last lines of the error:")
        lines += [f"  {line}" for line in job.error_tail]
    return "\n".join(lines)


def table(jobs: Iterable[JobState], submitted: dict[str, str]) -> str:
    rows = [("JOB", "NAME", "STATE", "SUBMITTED", "OUTPUT")]
    rows += [(j.job_id, j.name, j.state, submitted.get(j.job_id, ""), j.output or "")
             for j in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  "
                     + r[4] for r in rows)
