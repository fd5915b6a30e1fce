from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from mgft_train.parallel.detect import strategy_that_ran, unwrap
from torch.nn.parallel import DistributedDataParallel


@pytest.fixture
def gloo_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_bare_module_in_one_process_is_single():
    assert strategy_that_ran(torch.nn.Linear(2, 2)) == ("single", {"wrapper": None})


def test_ddp_is_detected_from_the_wrapper(gloo_group):
    model = torch.nn.Linear(2, 2)
    wrapped = DistributedDataParallel(model)
    assert strategy_that_ran(wrapped) == ("ddp", {"wrapper": "DistributedDataParallel"})
    assert unwrap(wrapped) is model


def test_fsdp_is_detected_from_dtensor_shards(gloo_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    mesh = init_device_mesh("cpu", (1,))
    fully_shard(model[0], mesh=mesh)
    fully_shard(model, mesh=mesh)
    name, evidence = strategy_that_ran(model)
    assert name == "fsdp"
    assert evidence == {"fsdp_units": 2, "dtensor_params": 4, "params": 4,
                        "placements": ["(Shard(dim=0),)"]}


class _ZeroEngine:
    """What `_deepspeed` reads of a DeepSpeedEngine, answered from DeepSpeed's own parse of
    the config the trainer generates (a real engine needs a GPU for ZeRO-3 offload)."""

    def __init__(self, parsed, module: torch.nn.Module) -> None:
        self._zero = parsed.zero_config
        self.module, self.optimizer = module, torch.optim.SGD(module.parameters(), lr=0.1)
        self.zero_optimization_stage = lambda: parsed.zero_optimization_stage

    def zero_offload_optimizer(self):
        return self._zero.offload_optimizer

    def zero_offload_param(self):
        return self._zero.offload_param


@pytest.mark.parametrize("strategy,expected", [("zero3-offload", ("zero3-offload", "cpu")),
                                               ("zero3", ("zero3", None))])
def test_zero_evidence_reads_the_offload_device_as_deepspeed_parses_it(strategy, expected):
    """DeepSpeed 0.19 parses the offload device to the plain string "cpu" (older versions:
    an enum with .value); seen on an H100 as every zero3-offload run's crash at the end."""
    from mgft.spec.job import Strategy, TrainSpec
    from mgft.spec.parallel_dims import ParallelDims
    from mgft_train.parallel import detect, zero

    zero.import_deepspeed()
    from deepspeed.runtime.config import DeepSpeedConfig

    train = TrainSpec(model="m", dataset="d", strategy=Strategy(strategy))
    dims = ParallelDims(strategy=train.strategy, world_size=1, devices_per_process=1,
                        micro_batch=train.micro_batch, grad_accum=train.grad_accum)
    parsed = DeepSpeedConfig(zero.deepspeed_config(train, 3, dims, bf16=False))
    name, evidence = detect._deepspeed(_ZeroEngine(parsed, torch.nn.Linear(2, 2)))
    assert (name, evidence["offload_optimizer"]) == expected
    assert evidence["offload_param"] == expected[1]
