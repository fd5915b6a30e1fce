"""One small function per strategy, and a check of what really ran.

The second half matters as much as the first: on CPU, popular stacks silently fall back to a
single process or plain DDP, so metrics.json records what the model object actually is.
"""

from __future__ import annotations

import torch
from mgft.spec import Strategy
from torch.nn.parallel import DistributedDataParallel

from mgft_train.checks import check_strategy
from mgft_train.distributed import Dist


def wrap(model: torch.nn.Module, strategy: Strategy, ctx: Dist) -> torch.nn.Module:
    check_strategy(strategy)
    if not ctx.grouped:
        return model  # one process: nothing to parallelize
    return ddp(model, ctx)


def ddp(model: torch.nn.Module, ctx: Dist) -> DistributedDataParallel:
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # Every trainable parameter (LoRA or full) gets a gradient each step, so DDP need not
    # search the graph for unused ones (find_unused_parameters costs a traversal per step).
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def strategy_that_ran(model: torch.nn.Module) -> str:
    if isinstance(model, DistributedDataParallel):
        return Strategy.DDP.value
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        return "unwrapped"  # several ranks but no wrapper: each trains alone; say so loudly
    return "single"
