"""Every environment variable that crosses from launcher to trainer, in one place.

The launcher writes `LaunchEnv.to_env()` into the job; the trainer reads `DistEnv.from_env()`
(set by torchrun) and `LaunchEnv.from_env()`. Nothing else in mgft reads or writes these names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

MGFT_DEVICE = "MGFT_DEVICE"
MGFT_JOB_NAME = "MGFT_JOB_NAME"
MGFT_BACKEND = "MGFT_BACKEND"

# Set by torchrun for every worker; the launcher never sets these itself.
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# What the Kubeflow operators inject into every pod for torchrun (training-operator v1 adds
# MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE beside them; Trainer v2 only these).
PET_VARS = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
            "PET_MASTER_PORT", "PET_RDZV_ENDPOINT", "PET_RDZV_BACKEND", "PET_RDZV_ID",
            "PET_RDZV_CONF", "PET_MAX_RESTARTS")
TORCHELASTIC_RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"  # set by torchrun, read by the trainer
# Names a user may not override with --env: the launcher or torchrun owns them.
RESERVED = frozenset({*DIST_VARS, MGFT_DEVICE, MGFT_JOB_NAME, MGFT_BACKEND,
                      "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID", *PET_VARS})


@dataclass(frozen=True, kw_only=True, slots=True)
class LaunchEnv:
    """What the launcher tells every trainer process."""

    device: str  # "cpu" or "cuda"
    job_name: str
    backend: str

    def to_env(self) -> dict[str, str]:
        return {MGFT_DEVICE: self.device, MGFT_JOB_NAME: self.job_name, MGFT_BACKEND: self.backend}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LaunchEnv:
        env = os.environ if env is None else env
        device = env.get(MGFT_DEVICE, "")
        if device not in ("cpu", "cuda"):
            device = "auto"
        return cls(device=device, job_name=env.get(MGFT_JOB_NAME, "mgft"),
                   backend=env.get(MGFT_BACKEND, "local"))


@dataclass(frozen=True, kw_only=True, slots=True)
class DistEnv:
    """The process's place in the job, as torchrun (or a compatible launcher) sets it."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launched: bool = False  # started by torchrun (or similar), even with one process
    restart_count: int = 0  # torchrun's restarts of this job's workers so far (--max-restarts)

    @property
    def distributed(self) -> bool:
        return self.launched or self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_env(self) -> dict[str, str]:
        return {"RANK": str(self.rank), "LOCAL_RANK": str(self.local_rank),
                "WORLD_SIZE": str(self.world_size), "LOCAL_WORLD_SIZE": str(self.local_world_size),
                "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port)}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DistEnv:
        env = os.environ if env is None else env
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(rank=int(env.get("RANK", "0")), local_rank=int(env.get("LOCAL_RANK", "0")),
                   world_size=world, local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))),
                   master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                   master_port=int(env.get("MASTER_PORT", "29500")), launched="RANK" in env,
                   restart_count=int(env.get(TORCHELASTIC_RESTART_COUNT, "0")))


# --- Communication and devices (mgft.comm.nccl, mgft.comm.fabric, mgft.hw.gpus) ----------

MGFT_FABRIC = "MGFT_FABRIC"
MGFT_DIST_TIMEOUT = "MGFT_DIST_TIMEOUT"
MGFT_PREFLIGHT = "MGFT_PREFLIGHT"
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
CUDA_DEVICE_ORDER = "CUDA_DEVICE_ORDER"
NCCL_NVLS_ENABLE = "NCCL_NVLS_ENABLE"
DEFAULT_DIST_TIMEOUT = 600
# Variables that steer NCCL, torch.distributed or the libfabric (EFA) transport under it.
COMM_PREFIXES = ("NCCL_", "TORCH_NCCL_", "TORCH_DISTRIBUTED_", "FI_", "GLOO_")
RESERVED = RESERVED | {MGFT_FABRIC, MGFT_DIST_TIMEOUT, MGFT_PREFLIGHT}


@dataclass(frozen=True, kw_only=True, slots=True)
class CommEnv:
    """How the job's processes set up communication: written by the launcher, read at start."""

    fabric: str = "auto"  # a mgft.spec.job.Fabric value; `auto` is detected in the job
    timeout_s: int = DEFAULT_DIST_TIMEOUT
    preflight: bool = False

    def to_env(self) -> dict[str, str]:
        env = {MGFT_FABRIC: self.fabric, MGFT_DIST_TIMEOUT: str(self.timeout_s)}
        if self.preflight:
            env[MGFT_PREFLIGHT] = "1"
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CommEnv:
        env = os.environ if env is None else env
        timeout = env.get(MGFT_DIST_TIMEOUT, "")
        return cls(fabric=env.get(MGFT_FABRIC, "auto") or "auto",
                   timeout_s=int(timeout) if timeout.isdigit() else DEFAULT_DIST_TIMEOUT,
                   preflight=env.get(MGFT_PREFLIGHT, "") == "1")


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceEnv:
    """The GPUs a local job may see. Indices follow nvidia-smi (PCI bus order), which is not
    CUDA's default order, so CUDA_DEVICE_ORDER goes with them."""

    visible: tuple[str, ...]

    def to_env(self) -> dict[str, str]:
        return {CUDA_DEVICE_ORDER: "PCI_BUS_ID", CUDA_VISIBLE_DEVICES: ",".join(self.visible)}


def visible_devices(env: Mapping[str, str] | None = None) -> str | None:
    """CUDA_VISIBLE_DEVICES as the user, Slurm or Kubernetes set it; None when unset."""
    env = os.environ if env is None else env
    return env.get(CUDA_VISIBLE_DEVICES)


def comm_vars(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every NCCL / torch.distributed / libfabric variable in the environment."""
    env = os.environ if env is None else env
    return {k: v for k, v in sorted(env.items()) if k.startswith(COMM_PREFIXES)}


def fill_unset(values: Mapping[str, str],
               env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set each variable the environment does not already have; return what was set.

    What is already there wins: the user's --nccl and --env (rendered into the job), a site's
    module or container settings, and an NCCL_NVLS_ENABLE=0 that keeps multicast off.
    """
    env = os.environ if env is None else env
    applied = {k: v for k, v in values.items() if k not in env}
    env.update(applied)
    return applied

@dataclass(frozen=True, kw_only=True, slots=True)
class OperatorEnv:
    """What a Kubeflow operator told this pod about its place in the job.

    v1 (PyTorchJob) sets PET_* and MASTER_ADDR, MASTER_PORT, RANK (the node rank); with an
    elasticPolicy it sets PET_RDZV_* instead of a master. v2 (TrainJob) sets PET_* only.
    `mgft.node.k8s` turns this into one torchrun command line.
    """

    nnodes: str | None = None  # "2", or "1:4" when elastic
    nproc_per_node: str | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None  # "host:port", elastic only
    rdzv_backend: str | None = None
    rdzv_id: str | None = None
    rdzv_conf: str | None = None
    max_restarts: int | None = None

    def to_env(self) -> dict[str, str]:
        values = {"PET_NNODES": self.nnodes, "PET_NPROC_PER_NODE": self.nproc_per_node,
                  "PET_NODE_RANK": self.node_rank, "PET_MASTER_ADDR": self.master_addr,
                  "PET_MASTER_PORT": self.master_port, "PET_RDZV_ENDPOINT": self.rdzv_endpoint,
                  "PET_RDZV_BACKEND": self.rdzv_backend, "PET_RDZV_ID": self.rdzv_id,
                  "PET_RDZV_CONF": self.rdzv_conf, "PET_MAX_RESTARTS": self.max_restarts}
        return {k: str(v) for k, v in values.items() if v is not None}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorEnv:
        """PET_* first; v1's MASTER_ADDR/MASTER_PORT/RANK fill in what an operator left out.
        Raises ValueError naming the variable when a number is not a number."""
        env = os.environ if env is None else env

        def text(*names: str) -> str | None:
            return next((env[n] for n in names if env.get(n, "") != ""), None)

        def number(*names: str) -> int | None:
            name = next((n for n in names if env.get(n, "") != ""), None)
            if name is None:
                return None
            try:
                return int(env[name])
            except ValueError:
                raise ValueError(f"{name}={env[name]!r} is not a whole number") from None

        return cls(nnodes=text("PET_NNODES"), nproc_per_node=text("PET_NPROC_PER_NODE"),
                   node_rank=number("PET_NODE_RANK", "RANK"),
                   master_addr=text("PET_MASTER_ADDR", "MASTER_ADDR"),
                   master_port=number("PET_MASTER_PORT", "MASTER_PORT"),
                   rdzv_endpoint=text("PET_RDZV_ENDPOINT"), rdzv_backend=text("PET_RDZV_BACKEND"),
                   rdzv_id=text("PET_RDZV_ID"), rdzv_conf=text("PET_RDZV_CONF"),
                   max_restarts=number("PET_MAX_RESTARTS"))


# Slurm sets these in every job step; mgft.node.slurm reads them on each node.
SLURM_JOB_ID = "SLURM_JOB_ID"
SLURM_JOB_NODELIST = "SLURM_JOB_NODELIST"
SLURM_NODEID = "SLURM_NODEID"
SLURM_PROCID = "SLURM_PROCID"
# Launcher -> torchrun on each node: the rendezvous options that differ per node, and the
# per-line rank prefix that lets `mgft logs --rank N` find one rank's lines in a node's log.
PET_RDZV_CONF = "PET_RDZV_CONF"
TORCHRUN_LOG_PREFIX = "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"
RANK_PREFIX_TEMPLATE = "[rank${rank}]:"
# Launcher -> torchrun on this machine (mgft.backends.local.submit): how long torchrun lets its
# workers finish a checkpoint after a stop signal before it kills them.
TORCHRUN_SHUTDOWN_TIMEOUT = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"
# Where the launcher keeps its own records (Slurm jobs it submitted); never read by the trainer.
MGFT_STATE_DIR = "MGFT_STATE_DIR"


@dataclass(frozen=True, kw_only=True, slots=True)
class SlurmEnv:
    """This task's place in a Slurm job, as Slurm describes it."""

    job_id: str
    nodelist: str
    node_id: int = 0
    proc_id: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlurmEnv:
        env = os.environ if env is None else env
        missing = [k for k in (SLURM_JOB_ID, SLURM_JOB_NODELIST) if not env.get(k)]
        if missing:
            raise RuntimeError(f"{' and '.join(missing)} unset: this runs inside a Slurm job "
                               "step (srun), one task per node")
        return cls(job_id=env[SLURM_JOB_ID], nodelist=env[SLURM_JOB_NODELIST],
                   node_id=int(env.get(SLURM_NODEID, "0")), proc_id=int(env.get(SLURM_PROCID, "0")))


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeEnv:
    """What torchrun gets on each node of a Slurm job besides the job's own environment."""

    is_host: bool  # this node runs the c10d store: decided from SLURM_NODEID, never guessed

    def to_env(self) -> dict[str, str]:
        return {PET_RDZV_CONF: f"is_host={int(self.is_host)}",
                TORCHRUN_LOG_PREFIX: RANK_PREFIX_TEMPLATE}
