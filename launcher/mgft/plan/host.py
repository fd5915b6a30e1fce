"""Host (CPU) memory per node of one training job under each strategy, beside the per-GPU
memory of `mgft.plan.memory`, and the checks that compare it with a node's memory.

Terms, per process unless said otherwise (docs/plan.md, "Host memory", derives each):
runtime (torch, CUDA, NCCL and the trainer's libraries), offload (zero3-offload's
partitions on the CPU, most of them page-locked), offload_extra (what zero3-offload was
measured to hold beyond them), load (one tensor at a time on its way to
the GPU) and, on rank 0 only, the final save's gather of the whole model and a QLoRA
--save-merged's 16-bit base. Pure arithmetic apart from `known_arch` and `node_budget`,
which read a local config.json and this machine's memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mgft.plan.memory import GIB, Assumptions, Job, frozen_bytes, offload_host, param_bytes
from mgft.spec.job import Strategy, Tuning

if TYPE_CHECKING:
    from mgft.plan.arch import Arch
    from mgft.spec.job import JobSpec

FIX = ("use fewer processes per node (--gpus), another strategy (`mgft plan` shows each one's "
       "host memory), or --activation-checkpointing so that one keeping its state on the GPU "
       "fits")


@dataclass(frozen=True, kw_only=True, slots=True)
class HostBreakdown:
    """Bytes of host memory on the busiest node (the one with rank 0)."""

    strategy: Strategy
    processes: int  # trainer processes on the node
    runtime: float  # per process
    offload: float  # per process: state kept on the CPU all along
    pinned: float  # per process: the page-locked part of `offload` (never swapped out)
    offload_extra: float  # per process: measured beyond `offload` (Assumptions.offload_extra_*)
    load: float  # per process, while loading: the largest tensor passing through
    gather: float  # rank 0, at the final save: every weight, whole, as stored
    merged: float  # rank 0, at the final save: QLoRA --save-merged reloads the 16-bit base

    @property
    def moments(self) -> dict[str, float]:
        """Loading comes before the offloaded state exists; the save after training, with
        it still held."""
        resident = self.processes * (self.runtime + self.offload + self.offload_extra)
        return {"load": self.processes * (self.runtime + self.load), "train": resident,
                "save": resident + self.gather + self.merged}

    @property
    def peak(self) -> float:
        return max(self.moments.values())

    @property
    def peak_moment(self) -> str:
        moments = self.moments
        return max(moments, key=moments.__getitem__)

    def terms(self) -> dict[str, float]:
        return {"runtime": self.runtime, "offload": self.offload, "pinned": self.pinned,
                "offload_extra": self.offload_extra, "load": self.load,
                "gather": self.gather, "merged": self.merged}


def processes(job: Job, strategy: Strategy) -> int:
    """mp runs one process per node; every other strategy one per GPU."""
    return 1 if strategy is Strategy.MP else job.gpus_per_node


def model_bytes(job: Job, strategy: Strategy, a: Assumptions) -> float:
    """Every weight, whole, as the strategy stores it: what the final save gathers (for
    every strategy: engine.full_state_dict copies base and adapters to rank 0's CPU)."""
    return frozen_bytes(job, a) + param_bytes(job, strategy).weights * job.trainable


def host(job: Job, strategy: Strategy, a: Assumptions | None = None) -> HostBreakdown:
    a = a or Assumptions()
    arch = job.arch
    offload, pinned = offload_host(job, a) if strategy is Strategy.ZERO3_OFFLOAD else (0.0, 0.0)
    extra = a.offload_extra_share * offload + a.offload_extra_gib * GIB if offload else 0.0
    merged = job.act_bytes * arch.params if (job.save and job.save_merged and
                                             job.tuning is Tuning.QLORA) else 0.0
    return HostBreakdown(
        strategy=strategy, processes=processes(job, strategy), runtime=a.process_host_gib * GIB,
        offload=offload, pinned=pinned, offload_extra=extra,
        load=float(job.act_bytes * arch.vocab * arch.hidden),
        gather=model_bytes(job, strategy, a) if job.save else 0.0, merged=merged)


# --- budgets ------------------------------------------------------------------------------

_UNITS = {"": 2**20, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}  # sbatch: MB by default


def slurm_mem_bytes(mem: str | None) -> int | None:
    """sbatch --mem as bytes; None when unset or 0 (all of the node's memory: unknown here)."""
    found = re.fullmatch(r"([0-9]+)([KMGT]?)", mem or "")
    if found is None or int(found.group(1)) == 0:
        return None
    return int(found.group(1)) * _UNITS[found.group(2)]


def known_arch(spec: JobSpec) -> Arch | None:
    """The model's shape when the launcher can read it here: --arch, or a local config.json.
    None otherwise (a path on the cluster only): the checks are then skipped."""
    from mgft.plan.arch import config_path, resolve
    from mgft.spec.errors import SpecError

    source = spec.plan.arch if spec.plan.arch is not None else spec.train.model
    if spec.plan.arch is None and config_path(source) is None:
        return None
    try:
        return resolve(source)
    except SpecError:
        return None


def planned(spec: JobSpec) -> HostBreakdown | None:
    """The host memory the job's plan needs per node, when its model's shape is known."""
    if spec.generate is not None or spec.on_cpu or spec.train.strategy is Strategy.AUTO:
        return None  # the plan sizes GPU training; on CPU every byte is host memory anyway
    arch = known_arch(spec)
    if arch is None:
        return None
    job = Job.of_spec(spec, arch)
    if spec.resources.nproc_per_node not in (None, processes(job, spec.train.strategy)):
        return None  # not the one-process-per-GPU layout the plan describes
    return host(job, spec.train.strategy)


def check(spec: JobSpec, budget: int | None, where: str) -> HostBreakdown | None:
    """Refuse (SpecError: one line, exit 2) a job whose planned host memory per node exceeds
    `budget` bytes; `where` names the budget, e.g. "this machine's memory"."""
    from mgft.spec.errors import SpecError

    plan = planned(spec)
    if plan is None or budget is None or plan.peak <= budget:
        return plan
    raise SpecError("--strategy", spec.train.strategy.value,
                    f"plans {plan.peak / GIB:.1f} GiB of host memory per node "
                    f"({plan.processes} processes, peak at {plan.peak_moment}) and "
                    f"{where} is {budget / GIB:.1f} GiB", FIX)
