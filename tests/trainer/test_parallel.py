from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from mgft.spec import Strategy
from mgft_train import parallel
from mgft_train.distributed import Dist
from mgft_train.errors import UsageError
from torch.nn.parallel import DistributedDataParallel

CPU = torch.device("cpu")


def ctx(backend: str) -> Dist:
    return Dist(rank=0, local_rank=0, world_size=1, device=CPU, backend=backend)


def test_single_process_is_left_unwrapped_and_reported_as_single():
    model = torch.nn.Linear(2, 2)
    assert parallel.wrap(model, Strategy.DDP, ctx("none")) is model
    assert parallel.strategy_that_ran(model) == "single"


def test_unsupported_strategy_is_refused_before_wrapping():
    with pytest.raises(UsageError, match="^--strategy zero3:"):
        parallel.wrap(torch.nn.Linear(2, 2), Strategy.ZERO3, ctx("none"))


def test_ddp_wraps_and_is_detected_in_a_real_gloo_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = torch.nn.Linear(2, 2)
        wrapped = parallel.wrap(model, Strategy.DDP, ctx("gloo"))
        assert isinstance(wrapped, DistributedDataParallel)
        assert parallel.strategy_that_ran(wrapped) == "ddp"
        assert parallel.unwrap(wrapped) is model
    finally:
        dist.destroy_process_group()
