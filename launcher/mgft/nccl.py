"""The communication environment of every trainer process, with the reason for each variable.

One module for every backend. Fabric presets and auto-detection build on `EnvVar` here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mgft.spec import JobSpec


@dataclass(frozen=True, slots=True)
class EnvVar:
    name: str
    value: str
    why: str


def comm_env(spec: JobSpec) -> list[EnvVar]:
    if spec.on_cpu:
        return [EnvVar("OMP_NUM_THREADS", "1",
                       "one BLAS thread per rank; more threads than cores slows gloo runs 6x")]
    return [
        EnvVar("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3",
               "a failed or timed-out collective tears the process down instead of hanging"),
        EnvVar("NCCL_DEBUG", "WARN", "NCCL errors carry their reason, without INFO noise"),
        EnvVar("OMP_NUM_THREADS", "4", "bounded CPU threads per rank; data work is light"),
    ]


def runtime_env(spec: JobSpec) -> list[EnvVar]:
    """Variables every trainer process gets, whatever the hardware."""
    return [
        EnvVar("PYTHONUNBUFFERED", "1", "logs reach the scheduler as they happen"),
        EnvVar("TOKENIZERS_PARALLELISM", "false", "no fork warnings or deadlocks from tokenizers"),
        EnvVar("HF_HUB_OFFLINE", "1", "models and data are local paths; never wait on a hub"),
    ]
