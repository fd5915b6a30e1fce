"""DDP: every rank holds the whole model; gradients are averaged after each step's backward."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from mgft.spec.job import TrainSpec
from torch.nn.parallel import DistributedDataParallel

from mgft_train import optim
from mgft_train.distributed import Dist
from mgft_train.parallel.engine import Engine


class DdpEngine(Engine):
    def accumulating(self, last: bool) -> AbstractContextManager[Any]:
        # Only the last micro-batch all-reduces gradients; the others accumulate locally.
        return nullcontext() if last else self.model.no_sync()


def ddp_kwargs(model: torch.nn.Module, ctx: Dist) -> dict[str, Any]:
    devices = {p.device for p in model.parameters()}
    # A module on several GPUs (mp across nodes) must not name device_ids; one on CPU neither.
    one_gpu = ctx.device.type == "cuda" and len(devices) == 1
    # Every trainable parameter (LoRA or full) gets a gradient each step, so DDP need not
    # search the graph for unused ones (find_unused_parameters costs a traversal per step).
    # gradient_as_bucket_view: each .grad is a view into DDP's all-reduce bucket rather
    # than a second copy beside it: 2 bytes per trained parameter (15 GiB for a full 8B
    # fine-tune, measured on one H200) that `mgft plan` rightly does not count.
    return {"device_ids": [ctx.device.index] if one_gpu else None,
            "gradient_as_bucket_view": True}


def apply(model: torch.nn.Module, spec: TrainSpec, ctx: Dist, total: int) -> Engine:
    if not ctx.grouped:  # one process: nothing to parallelize
        optimizer = optim.make_optimizer(model.parameters(), spec, ctx.device)
        return Engine(model, model, optimizer, optim.make_scheduler(optimizer, total), ctx)
    wrapped = DistributedDataParallel(model, **ddp_kwargs(model, ctx))
    optimizer = optim.make_optimizer(wrapped.parameters(), spec, ctx.device)
    return DdpEngine(wrapped, model, optimizer, optim.make_scheduler(optimizer, total), ctx)
