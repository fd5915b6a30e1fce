"""How a job's processes share the work, checked in one place (after torchtitan's
ParallelDims). The launcher builds it from the JobSpec (`of_spec`, part of validation); the
trainer builds it from the world it really joined and sizes DeepSpeed's batch from it.

Every mgft strategy is data parallel over all processes; they differ in what is sharded
across them and in how many GPUs one process drives (mp: all of its node's).
"""

from __future__ import annotations

from dataclasses import dataclass

from mgft.spec.errors import fail
from mgft.spec.job import JobSpec, Strategy

# What each strategy shards across the data-parallel processes (nothing: a full replica each).
SHARDED: dict[Strategy, tuple[str, ...]] = {
    Strategy.DDP: (),
    Strategy.MP: (),
    Strategy.ZERO1: ("optimizer state",),
    Strategy.ZERO2: ("optimizer state", "gradients"),
    Strategy.FSDP: ("optimizer state", "gradients", "parameters"),
    Strategy.ZERO3: ("optimizer state", "gradients", "parameters"),
    Strategy.ZERO3_OFFLOAD: ("optimizer state", "gradients", "parameters"),
}
GPU_ONLY = {
    Strategy.MP: "mp splits one model across the GPUs of a node",
    Strategy.ZERO3_OFFLOAD: "zero3-offload moves GPU state to CPU memory, and on CPU "
    "everything is there already",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class ParallelDims:
    strategy: Strategy
    world_size: int  # processes in the job
    devices_per_process: int  # GPUs one process drives: 1, a node's GPUs with mp, 0 on CPU
    micro_batch: int
    grad_accum: int

    def __post_init__(self) -> None:
        if self.strategy is Strategy.AUTO:
            raise ValueError("--strategy auto is resolved before the degrees are known")
        for name in ("world_size", "micro_batch", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be at least 1")
        if self.devices_per_process == 0 and self.strategy in GPU_ONLY:
            fail("train.strategy", self.strategy.value,
                 f"needs GPUs ({GPU_ONLY[self.strategy]})",
                 "set --gpus 2 or more, or pick --strategy ddp, fsdp, zero2 or zero3 for CPU")
        if self.strategy is Strategy.MP and self.devices_per_process < 2:
            fail("resources.gpus", self.devices_per_process,
                 "--strategy mp splits the model across GPUs", "set --gpus 2 or more")

    @classmethod
    def of_spec(cls, spec: JobSpec) -> ParallelDims:
        """The job's degrees, refusing a process layout the strategy cannot run."""
        gpus, nproc, strategy = spec.resources.gpus, spec.nproc_per_node, spec.train.strategy
        if strategy is Strategy.MP and gpus >= 2 and nproc != 1:
            fail("resources.nproc_per_node", nproc,
                 "--strategy mp runs one process per node that sees all its GPUs",
                 "drop --nproc-per-node or set it to 1")
        if strategy is not Strategy.MP and gpus > 0 and nproc != gpus:
            fail("resources.nproc_per_node", nproc,
                 f"--strategy {strategy.value} runs one process per GPU and --gpus is {gpus}",
                 f"drop --nproc-per-node or set it to {gpus}")
        per_process = gpus if strategy is Strategy.MP else min(gpus, 1)
        return cls(strategy=strategy, world_size=spec.world_size,
                   devices_per_process=per_process, micro_batch=spec.train.micro_batch,
                   grad_accum=spec.train.grad_accum)

    @property
    def data_parallel(self) -> int:
        """Processes that each read their own share of every batch: all of them."""
        return self.world_size

    @property
    def shard_degree(self) -> int:
        """Processes one copy of the sharded state is spread over (1: nothing is sharded)."""
        return self.world_size if SHARDED[self.strategy] else 1

    @property
    def sharded(self) -> tuple[str, ...]:
        return SHARDED[self.strategy]

    @property
    def global_batch(self) -> int:
        """Samples (or packed rows) per optimizer step, over the whole job."""
        return self.micro_batch * self.grad_accum * self.data_parallel
