"""The callable that submitit runs once on each node: `mgft.node.slurm.run` on the job's
torchrun, with submitit's own checkpoint-and-requeue machinery for preemption.

submitit pickles it with the job and unpickles it on every node, so it holds only plain data
and imports submitit only when it checkpoints.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from mgft.contract.env import NodeEnv, SlurmEnv
from mgft.node import nodelist
from mgft.node import slurm as node
from mgft.node.torchrun import torchrun_path


class TrainerFailed(RuntimeError):
    """The trainer failed on some rank; its own messages are in the node logs."""


@dataclass(frozen=True, kw_only=True)
class NodeTask:
    torchrun_options: list[str]  # before the rendezvous endpoint (mgft.backends.slurm.options)
    torchrun_after: list[str]  # logging options, then the trainer module and its flags
    env: dict[str, str] = field(default_factory=dict)  # contract.process.job_env(spec)
    nproc: int = 1

    def argv(self, slurm: SlurmEnv) -> list[str]:
        # The head node from SLURM_JOB_NODELIST itself: many containers lack scontrol.
        return node.torchrun_argv(torchrun_path(), self.torchrun_options,
                                  self.torchrun_after, head_node=nodelist.first(slurm.nodelist),
                                  job_id=slurm.job_id)

    def __call__(self) -> dict[str, Any]:
        # submitit installed its USR2 handler (checkpoint, dump, `scontrol requeue`, exit)
        # before calling us. node.run takes USR2 over while torchrun runs, and the handler is
        # called only once the trainer has finished its checkpoint.
        submitit_requeue = signal.getsignal(signal.SIGUSR2)
        slurm = SlurmEnv.from_env()
        env = os.environ | self.env | NodeEnv(is_host=slurm.node_id == 0).to_env()
        outcome = node.run(self.argv(slurm), env, nproc=self.nproc)

        def requeue(job_id: str) -> None:
            if callable(submitit_requeue):
                submitit_requeue(signal.SIGUSR2, None)  # exits once the job is requeued
            node.scontrol_requeue(job_id)  # not under submitit (the handler returned)

        code = node.settle(outcome, slurm, requeue)
        if outcome.preempted or (outcome.terminated and code != 0):
            sys.exit(code)  # no result file: the job is requeued or being ended by Slurm
        if code != 0:
            where = f" on rank {outcome.failed_rank}" if outcome.failed_rank is not None else ""
            raise TrainerFailed(f"trainer exited with code {code}{where}; its messages are in "
                                "this job's logs (mgft logs JOB)")
        return {"node": slurm.node_id, "ranks": list(outcome.ranks)}

    def checkpoint(self) -> Any:
        """What submitit requeues: this same task. The trainer resumes from the checkpoint it
        wrote under <output>/checkpoints, so nothing else needs saving here."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)
