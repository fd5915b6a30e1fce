"""Naive model parallelism: one process per node sees all its GPUs and holds one copy of the
model, its blocks split in contiguous runs across them (embeddings on the first GPU, the
final norm and the output head on the last). For models that fit on no single GPU.

GPUs take turns (no pipelining), so this trades speed for memory. Across nodes, the copies
are kept in step with DDP.
"""

from __future__ import annotations

import torch
from mgft.spec.job import TrainSpec
from torch.nn.parallel import DistributedDataParallel

from mgft_train import optim
from mgft_train.distributed import Dist
from mgft_train.parallel.ddp import DdpEngine, ddp_kwargs
from mgft_train.parallel.engine import Engine


def model_parallel_map(blocks: list[str], before: list[str], after: list[str],
                       gpus: int) -> dict[str, int]:
    """device_map: `blocks` split into `gpus` contiguous, near-equal runs; modules that run
    before the blocks (embeddings) on GPU 0, those after them (norm, head) on the last GPU."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    placement = dict.fromkeys(before, 0)
    per_gpu, extra = divmod(len(blocks), gpus)
    start = 0
    for gpu in range(gpus):
        count = per_gpu + (1 if gpu < extra else 0)
        placement.update(dict.fromkeys(blocks[start:start + count], gpu))
        start += count
    placement.update(dict.fromkeys(after, gpus - 1))
    return placement


def device_map(config: object, gpus: int) -> dict[str, int]:
    """model_parallel_map for a HF causal LM, read from its module tree built on `meta`.

    A HF causal LM is `<decoder>.<embeddings...>, <decoder>.layers.N, <decoder>.<norm...>`
    plus a head at the top; children registered after the block list (the final norm) run
    after the blocks, so they join the head on the last GPU.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    kinds = set(skeleton._no_split_modules or ())
    blocks = [n for n, m in skeleton.named_modules() if type(m).__name__ in kinds]
    if not blocks:
        raise ValueError(f"{type(skeleton).__name__} names no transformer blocks to split")
    block_list = blocks[0].rsplit(".", 1)[0]  # "model.layers"
    decoder = block_list.rsplit(".", 1)[0]  # "model"
    children = [f"{decoder}.{n}" for n, _ in skeleton.get_submodule(decoder).named_children()]
    split = children.index(block_list)
    before, after = children[:split], children[split + 1:]
    head = skeleton.get_output_embeddings()
    for name, module in skeleton.named_children():
        if name != decoder:
            (after if module is head else before).append(name)
    return model_parallel_map(blocks, before, after, gpus)


def apply(model: torch.nn.Module, spec: TrainSpec, ctx: Dist, total: int) -> Engine:
    # Placement already happened at load time (model.load_model passes device_map).
    if ctx.grouped and ctx.world_size > 1:
        wrapped = DistributedDataParallel(model, **ddp_kwargs(model, ctx))
        optimizer = optim.make_optimizer(wrapped.parameters(), spec, ctx.device)
        return DdpEngine(wrapped, model, optimizer, optim.make_scheduler(optimizer, total), ctx)
    optimizer = optim.make_optimizer(model.parameters(), spec, ctx.device)
    return Engine(model, model, optimizer, optim.make_scheduler(optimizer, total), ctx)
