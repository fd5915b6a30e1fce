"""The degree arithmetic, CPU only: figures worked out by hand for each strategy."""

from __future__ import annotations

import pytest
from mgft.spec.errors import SpecError
from mgft.spec.job import Strategy
from mgft.spec.parallel_dims import ParallelDims

from tests.launcher.render import cases


def dims(strategy: Strategy, world: int = 8, per_process: int = 1, micro: int = 2,
         accum: int = 3) -> ParallelDims:
    return ParallelDims(strategy=strategy, world_size=world, devices_per_process=per_process,
                        micro_batch=micro, grad_accum=accum)


@pytest.mark.parametrize("strategy,shard_degree,sharded", [
    (Strategy.DDP, 1, 0), (Strategy.ZERO1, 8, 1), (Strategy.ZERO2, 8, 2),
    (Strategy.FSDP, 8, 3), (Strategy.ZERO3, 8, 3), (Strategy.ZERO3_OFFLOAD, 8, 3)])
def test_what_each_strategy_shards_and_over_how_many(strategy, shard_degree, sharded):
    d = dims(strategy)
    assert d.shard_degree == shard_degree
    assert len(d.sharded) == sharded
    assert d.global_batch == 2 * 3 * 8  # every process reads its own micro-batches


def test_mp_is_one_replica_per_process_over_its_gpus():
    d = dims(Strategy.MP, world=2, per_process=4)
    assert (d.shard_degree, d.data_parallel, d.global_batch) == (1, 2, 2 * 3 * 2)


@pytest.mark.parametrize("given,needle", [
    ({"train.strategy": "mp", "resources.gpus": 1}, "--gpus 1: --strategy mp splits"),
    ({"train.strategy": "mp", "resources.gpus": 4, "resources.nproc_per_node": 2},
     "--nproc-per-node 2: --strategy mp runs one process per node"),
    ({"train.strategy": "zero2", "resources.gpus": 4, "resources.nproc_per_node": 2},
     "--nproc-per-node 2: --strategy zero2 runs one process per GPU and --gpus is 4"),
    ({"train.strategy": "zero3-offload", "resources.gpus": 0},
     "--strategy zero3-offload: needs GPUs"),
])
def test_layouts_a_strategy_cannot_run_are_refused_naming_the_flag(given, needle):
    with pytest.raises(SpecError, match=needle.replace("(", r"\(")):
        cases.spec(**given)


def test_the_spec_gives_the_job_degrees():
    d = ParallelDims.of_spec(cases.spec(**{"backend": "slurm", "train.strategy": "fsdp",
                                           "resources.nodes": 2,
                                           "resources.gpus": 4, "train.micro_batch": 3,
                                           "train.grad_accum": 2}))
    assert (d.world_size, d.devices_per_process, d.shard_degree, d.global_batch) == (
        8, 1, 8, 3 * 2 * 8)
    cpu = ParallelDims.of_spec(cases.spec(**{"resources.gpus": 0,
                                             "resources.nproc_per_node": 3}))
    assert (cpu.world_size, cpu.devices_per_process) == (3, 0)


def test_auto_must_be_resolved_first():
    with pytest.raises(ValueError, match="auto"):
        dims(Strategy.AUTO)
