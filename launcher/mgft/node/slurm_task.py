"""The callable that submitit runs once on each node: `mgft.node.slurm.run` on the job's
torchrun, with submitit's own checkpoint-and-requeue machinery for preemption.

submitit pickles it with the job and unpickles it on every node, so it holds only plain data
and imports submitit only when it checkpoints.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mgft.contract.env import NodeEnv, SlurmEnv
from mgft.contract.exitcodes import USAGE
from mgft.node import nodelist
from mgft.node import slurm as node
from mgft.node.torchrun import torchrun_path


class TrainerFailed(RuntimeError):
    """The trainer failed on some rank; its own messages are in the node logs."""


@dataclass(frozen=True, kw_only=True)
class NodeTask:
    """One node's part of a Slurm job, the same for both ways of submitting it: submitit
    pickles it (`mgft submit`), the sbatch script writes it as argv (`to_argv`) and `main`
    rebuilds it (`mgft render`). The head node and the rendezvous port come from the running
    job (`SlurmEnv`), never from the script."""

    nnodes: int
    nproc: int
    torchrun_after: list[str]  # logging options, then the trainer module and its flags
    env: dict[str, str] = field(default_factory=dict)  # contract.process.job_env(spec)

    def torchrun_argv(self, slurm: SlurmEnv, torchrun: str) -> list[str]:
        """torchrun on every node: c10d rendezvous on the first node, run id = the job id.
        The head node from SLURM_JOB_NODELIST itself: many containers lack scontrol."""
        head_node = nodelist.first(slurm.nodelist)
        endpoint = f"{head_node}:{node.rdzv_port(slurm.job_id)}"
        return [torchrun, f"--nnodes={self.nnodes}", f"--nproc-per-node={self.nproc}",
                "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                f"--rdzv-id={slurm.job_id}", *self.torchrun_after]

    def to_argv(self) -> list[str]:
        """The words after `python3 -m mgft.node.slurm_task` in the sbatch script (env is
        exported by the script itself)."""
        return [f"--nnodes={self.nnodes}", f"--nproc-per-node={self.nproc}", "--",
                *self.torchrun_after]

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> NodeTask:
        words = list(argv)
        if "--" not in words:
            raise ValueError(f"expected --nnodes=N --nproc-per-node=N -- ARGS..., got {words}")
        split = words.index("--")
        own = dict(w.removeprefix("--").split("=", 1) for w in words[:split])
        return cls(nnodes=int(own["nnodes"]), nproc=int(own["nproc-per-node"]),
                   torchrun_after=words[split + 1:])

    def run(self, requeue: Callable[[str], None]) -> tuple[node.Outcome, int]:
        """torchrun on this node to the end; the job's exit code (see `node.settle`)."""
        slurm = SlurmEnv.from_env()
        env = os.environ | self.env | NodeEnv(is_host=slurm.node_id == 0).to_env()
        outcome = node.run(self.torchrun_argv(slurm, torchrun_path()), env, nproc=self.nproc)
        return outcome, node.settle(outcome, slurm, requeue)

    def __call__(self) -> dict[str, Any]:
        # submitit installed its USR2 handler (checkpoint, dump, `scontrol requeue`, exit)
        # before calling us. node.run takes USR2 over while torchrun runs, and the handler is
        # called only once the trainer has finished its checkpoint.
        submitit_requeue = signal.getsignal(signal.SIGUSR2)

        def requeue(job_id: str) -> None:
            if callable(submitit_requeue):
                submitit_requeue(signal.SIGUSR2, None)  # exits once the job is requeued
            node.scontrol_requeue(job_id)  # not under submitit (the handler returned)

        outcome, code = self.run(requeue)
        if outcome.preempted or (outcome.terminated and code != 0):
            sys.exit(code)  # no result file: the job is requeued or being ended by Slurm
        if code != 0:
            where = f" on rank {outcome.failed_rank}" if outcome.failed_rank is not None else ""
            raise TrainerFailed(f"trainer exited with code {code}{where}; its messages are in "
                                "this job's logs (mgft logs JOB)")
        return {"node": SlurmEnv.from_env().node_id, "ranks": list(outcome.ranks)}

    def checkpoint(self) -> Any:
        """What submitit requeues: this same task. The trainer resumes from the checkpoint it
        wrote under <output>/checkpoints, so nothing else needs saving here."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def main(argv: Sequence[str] | None = None) -> int:
    """`python3 -m mgft.node.slurm_task --nnodes=N --nproc-per-node=N -- ARGS...`: one task
    per node of the rendered sbatch script."""
    try:
        task = NodeTask.from_argv(sys.argv[1:] if argv is None else argv)
    except (ValueError, KeyError) as err:
        print(f"usage: python3 -m mgft.node.slurm_task --nnodes=N --nproc-per-node=N -- "
              f"ARGS... ({err})", file=sys.stderr)
        return USAGE
    return task.run(node.scontrol_requeue)[1]


if __name__ == "__main__":
    sys.exit(main())
