"""ddp.py: DDP's gradients live in its all-reduce buckets, not in a second copy beside them."""

from __future__ import annotations

import torch
import torch.distributed as dist
from mgft_train.distributed import Dist
from mgft_train.parallel.ddp import ddp_kwargs
from torch.nn.parallel import DistributedDataParallel


def test_gradients_are_views_into_the_buckets(tmp_path):
    """Without gradient_as_bucket_view every parameter's .grad is its own tensor (2 bytes per
    trained parameter more in bf16: 15 GiB for a full 8B fine-tune); with it they share the
    few bucket storages."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(8)])
        ctx = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"),
                   backend="gloo")
        wrapped = DistributedDataParallel(model, **ddp_kwargs(model, ctx))
        wrapped(torch.randn(4, 64)).sum().backward()
        storages = {p.grad.untyped_storage().data_ptr() for p in model.parameters()}
        assert len(list(model.parameters())) == 16 and len(storages) <= 2
    finally:
        dist.destroy_process_group()
