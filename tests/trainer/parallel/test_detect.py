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
