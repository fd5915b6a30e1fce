"""Parallelism: one small module per strategy, each with `apply(model, spec, ctx, total)`
returning the `Engine` the loop drives, and `detect`, which says what really ran.

    engine.py         the Engine every strategy returns: the model made parallel, its
                      optimizer and schedule (zero.ZeroEngine: DeepSpeed's own step)
    ddp.py            DistributedDataParallel (and a single process, unwrapped)
    fsdp.py           FSDP2 fully_shard per transformer block
    zero.py           DeepSpeed ZeRO-1/2/3 and ZeRO-3 with CPU offload
    zero3_linear.py   ZeRO-3's linear function: a frozen layer saves no input for backward
    mp.py             layers split across one process's GPUs
    detect.py         what really ran (strategy, sharding, offload), for metrics.json
"""

from __future__ import annotations

import importlib

import torch
from mgft.spec.job import Strategy, TrainSpec

from mgft_train.distributed import Dist
from mgft_train.parallel.engine import Engine

MODULES = {Strategy.DDP: "ddp", Strategy.FSDP: "fsdp", Strategy.ZERO1: "zero",
           Strategy.ZERO2: "zero", Strategy.ZERO3: "zero", Strategy.ZERO3_OFFLOAD: "zero",
           Strategy.MP: "mp"}


def apply(model: torch.nn.Module, spec: TrainSpec, ctx: Dist, total: int) -> Engine:
    """Make `model` parallel the way --strategy asks, with its optimizer and schedule."""
    # Imported by name: a ddp run never imports deepspeed.
    module = importlib.import_module(f"{__name__}.{MODULES[spec.strategy]}")
    return module.apply(model, spec, ctx, total)
