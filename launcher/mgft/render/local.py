"""The torchrun command that `--backend local` runs on this machine."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePath

from mgft.contract.env import DeviceEnv
from mgft.contract.process import job_env, trainer_argv
from mgft.spec.job import JobSpec

STREAMED_RANK = 0  # the one local rank whose output torchrun copies to the console


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalCommand:
    env: dict[str, str]
    argv: list[str]
    log_dir: str  # torchrun writes every rank's stdout/stderr here

    def render(self) -> str:
        # NAME=value prefixes stay assignments only with the name unquoted; names are
        # validated identifiers, values are quoted.
        assignments = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join(assignments + [shlex.quote(w) for w in self.argv]) + "\n"


def local_command(spec: JobSpec, visible: tuple[str, ...] | None = None) -> LocalCommand:
    """`visible`: the GPUs `mgft.hw.gpus` chose here (None renders no CUDA_VISIBLE_DEVICES)."""
    log_dir = str(PurePath(spec.train.output, "logs"))
    argv = [
        "torchrun",
        "--standalone",  # a free local port: never collides with another job's 29500
        "--nnodes=1",
        f"--nproc-per-node={spec.nproc_per_node}",
        # On a worker's failure torchrun restarts all of them; they resume from the latest
        # checkpoint (mgft_train.checkpoint).
        *([f"--max-restarts={spec.max_restarts}"] if spec.max_restarts else []),
        # Every rank's output goes to its own file under the log dir; rank 0 also to the console.
        f"--log-dir={log_dir}",
        "--tee=3",
        f"--local-ranks-filter={STREAMED_RANK}",
        *trainer_argv(spec),
    ]
    devices = DeviceEnv(visible=visible).to_env() if visible is not None else {}
    return LocalCommand(env=job_env(spec) | devices, argv=argv, log_dir=log_dir)


def render_local(spec: JobSpec, visible: tuple[str, ...] | None = None) -> str:
    return local_command(spec, visible).render()
