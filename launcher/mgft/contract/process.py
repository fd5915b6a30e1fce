"""What every trainer process is given, on every backend: its environment and its argv.

The renderers write these into the job (local torchrun, sbatch, PyTorchJob, TrainJob) and the
Slurm submit path passes them to the node task; nothing else builds them.
"""

from __future__ import annotations

from mgft.comm.nccl import comm_env, runtime_env
from mgft.contract.argv import to_argv
from mgft.contract.env import LaunchEnv
from mgft.contract.generate import generate_argv
from mgft.spec.job import JobSpec

TRAINER_MODULE = "mgft_train"


def job_env(spec: JobSpec) -> dict[str, str]:
    """Environment of every trainer process: mgft's defaults, then the user's `--env`."""
    env = {var.name: var.value for var in [*runtime_env(spec), *comm_env(spec)]}
    env |= LaunchEnv(device="cpu" if spec.on_cpu else "cuda", job_name=spec.job_name,
                     backend=spec.backend.value).to_env()
    return env | dict(spec.env)


def trainer_argv(spec: JobSpec) -> list[str]:
    """What torchrun runs in every process: the trainer module and its flags, or for a
    generation job the generate module and its flags. Every backend renders this same list."""
    if spec.generate is not None:
        return generate_argv(spec)
    return ["-m", TRAINER_MODULE, *to_argv(spec.train)]
