"""Every environment variable that crosses from launcher to trainer, in one place.

The launcher writes `LaunchEnv.to_env()` into the job; the trainer reads `DistEnv.from_env()`
(set by torchrun) and `LaunchEnv.from_env()`. Nothing else in mgft reads or writes these names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

MGFT_DEVICE = "MGFT_DEVICE"
MGFT_JOB_NAME = "MGFT_JOB_NAME"
MGFT_BACKEND = "MGFT_BACKEND"

# Set by torchrun for every worker; the launcher never sets these itself.
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TORCHELASTIC_RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"  # set by torchrun, read by the trainer
# Names a user may not override with --env: the launcher or torchrun owns them.
RESERVED = frozenset({*DIST_VARS, MGFT_DEVICE, MGFT_JOB_NAME, MGFT_BACKEND,
                      "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID"})


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
