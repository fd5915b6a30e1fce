"""What a Slurm job is made of, computed once for both ways of submitting it.

`mgft render --backend slurm` writes these into a standalone sbatch script; `mgft submit
--backend slurm` hands the same values to submitit. Pure: no I/O, no submitit import.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from mgft.contract.process import job_env, trainer_argv
from mgft.node.slurm_task import NodeTask
from mgft.spec.job import JobSpec, SlurmContainer
from mgft.spec.rules.slurm import time_minutes

CPUS_PER_GPU = 8
PREEMPT_SIGNAL = "USR2"  # not USR1: NCCL catches USR1. submitit's default too.
NODE_MODULE = "mgft.node.slurm_task"


def cpus_per_task(spec: JobSpec) -> int:
    return spec.slurm.cpus_per_task or max(CPUS_PER_GPU * spec.resources.gpus,
                                           2 * spec.nproc_per_node)


def directives(spec: JobSpec) -> list[tuple[str, str | None]]:
    """The sbatch options, as (name, value); value None is a bare flag like --exclusive."""
    s = spec.slurm
    out: list[tuple[str, str | None]] = [
        ("job-name", spec.job_name),
        ("nodes", str(spec.resources.nodes)),
        ("ntasks-per-node", "1"),  # one torchrun per node; it starts the node's processes
    ]
    if spec.resources.gpus:
        out.append(("gpus-per-node", str(spec.resources.gpus)))
    out += [("cpus-per-task", str(cpus_per_task(spec))), ("time", s.time)]
    for key in ("partition", "account", "qos", "reservation", "constraint", "mem"):
        value = getattr(s, key)
        if value is not None:
            out.append((key, value))
    if s.exclusive:
        out.append(("exclusive", None))
    # USR2 before the limit: the trainer checkpoints and the job is requeued. Requeued runs
    # append to the same log.
    out += [("signal", f"{PREEMPT_SIGNAL}@{s.signal_before_s}"), ("requeue", None),
            ("open-mode", "append")]
    for item in s.sbatch_extra:
        name, sep, value = item.removeprefix("--").partition("=")
        out.append((name, value if sep else None))
    return out


def log_dir(spec: JobSpec) -> str:
    """torchrun writes each rank's stdout/stderr here, as the local backend does."""
    return str(PurePath(spec.train.output, "logs"))


def torchrun_logging(spec: JobSpec) -> list[str]:
    # --tee copies every rank's output to the node's log with a "[rankN]:" prefix (from
    # mgft.contract.env.NodeEnv); the prefix is only applied to tee'd output.
    return [f"--log-dir={log_dir(spec)}", "--tee=3"]


def torchrun_after(spec: JobSpec) -> list[str]:
    """torchrun's arguments after the rendezvous: logging, then the trainer and its flags."""
    return [*torchrun_logging(spec), *trainer_argv(spec)]


def node_task(spec: JobSpec) -> NodeTask:
    """What runs on each node, for both paths: submitit pickles it, the sbatch script writes
    it as `python3 -m NODE_MODULE` argv (with the job env exported by the script)."""
    return NodeTask(nnodes=spec.resources.nodes, nproc=spec.nproc_per_node,
                    torchrun_after=torchrun_after(spec), env=job_env(spec))


def srun_options(spec: JobSpec) -> list[str]:
    # One node's failure ends the step at once instead of leaving the others in a collective.
    opts = ["--kill-on-bad-exit=1"]
    if spec.slurm.container is SlurmContainer.PYXIS:
        opts.append(f"--container-image={spec.image}")
        if spec.slurm.container_mounts:
            opts.append(f"--container-mounts={','.join(spec.slurm.container_mounts)}")
    return opts


def exec_prefix(spec: JobSpec) -> list[str]:
    """Words before the node task's `python3` (apptainer runs it inside the image)."""
    if spec.slurm.container is not SlurmContainer.APPTAINER:
        return []
    words = ["apptainer", "exec"]
    if spec.resources.gpus:
        words.append("--nv")
    if spec.slurm.container_mounts:
        words += ["--bind", ",".join(spec.slurm.container_mounts)]
    assert spec.image is not None, "rules.check requires --image with --container"
    return [*words, spec.image]


# sbatch options that submitit takes as its own parameters (it writes --signal, --open-mode
# and the log paths itself); the others go through its additional_parameters.
_SUBMITIT_NAMES = {"job-name": "job_name", "nodes": "nodes", "ntasks-per-node": "ntasks_per_node",
                   "gpus-per-node": "gpus_per_node", "cpus-per-task": "cpus_per_task",
                   "partition": "partition", "account": "account", "qos": "qos",
                   "constraint": "constraint", "mem": "mem", "exclusive": "exclusive"}
_SUBMITIT_WRITES = {"signal", "open-mode", "time"}


def submitit_parameters(spec: JobSpec) -> dict[str, Any]:
    """`SlurmExecutor.update_parameters(**these)` gives the same job as `directives`."""
    params: dict[str, Any] = {
        "time": time_minutes(spec.slurm.time),  # submitit counts its timeouts in minutes
        "signal_delay_s": spec.slurm.signal_before_s,
        "srun_args": srun_options(spec),
        "wckey": None,  # submitit would add --wckey=submitit
    }
    extra: dict[str, Any] = {}
    for name, value in directives(spec):
        if name in _SUBMITIT_WRITES:
            continue
        typed: Any = True if value is None else int(value) if value.isdigit() else value
        if name in _SUBMITIT_NAMES:
            params[_SUBMITIT_NAMES[name]] = typed
        else:
            extra[name] = typed
    params["additional_parameters"] = extra
    return params
