"""FSDP2: `fully_shard` on every transformer block, then on the root; bf16 compute on GPU.

Each rank keeps 1/world of every parameter (a DTensor, Shard(0)) and gathers a block's full
weights just for its forward and backward. Checkpoints are DCP shards, one set per rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from mgft.spec.job import TrainSpec

from mgft_train import optim
from mgft_train.distributed import Dist
from mgft_train.model import blocks
from mgft_train.parallel.engine import SCHEDULER_FILE, Engine

DCP_DIR = "dcp"


def mixed_precision(device: torch.device) -> Any:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if device.type != "cuda":
        return MixedPrecisionPolicy()  # CPUs have slow bf16 matmuls: compute in fp32
    # Gradients are reduced in fp32: summing many ranks' bf16 gradients loses bits.
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def apply(model: torch.nn.Module, spec: TrainSpec, ctx: Dist, total: int) -> Engine:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    policy = mixed_precision(ctx.device)
    units = blocks(model)
    for block in units:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    # Embeddings, final norm and head: the backward pass starts with the head, right after the
    # forward pass ends, so resharding the root would only mean gathering it again at once.
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    prefetch(units)
    # The optimizer is built on the sharded parameters, so its state is sharded too.
    optimizer = optim.make_optimizer(model.parameters(), spec, ctx.device)
    return FsdpEngine(model, model, optimizer, optim.make_scheduler(optimizer, total), ctx)


def prefetch(units: list[torch.nn.Module]) -> None:
    """Gather the next block's weights while this one computes, in both directions
    (FSDP2 only prefetches in the backward pass unless told)."""
    for before, after in zip(units, units[1:], strict=False):
        before.set_modules_to_forward_prefetch([after])
        after.set_modules_to_backward_prefetch([before])


class FsdpEngine(Engine):

    def computing(self) -> AbstractContextManager[Any]:
        return nullcontext()  # the strategy's own mixed precision casts the weights
    def accumulating(self, last: bool) -> AbstractContextManager[Any]:
        return self._gradient_sync(last)

    @contextmanager
    def _gradient_sync(self, last: bool) -> Iterator[None]:
        # Skipping the reduce-scatter of all but the last micro-batch, like DDP's no_sync.
        self.model.set_requires_gradient_sync(last)
        yield

    def _options(self, **kwargs: Any) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(**kwargs)

    def save_state(self, directory: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        # Frozen base weights are re-read from --model on resume; LoRA checkpoints stay small.
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer,
                                            options=self._options(ignore_frozen_params=True))
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=directory / DCP_DIR)
        if self.ctx.is_main:
            torch.save(self.scheduler.state_dict(), directory / SCHEDULER_FILE)

    def load_state(self, directory: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        options = self._options(ignore_frozen_params=True)
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer, options=options)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=directory / DCP_DIR)  # fills the templates in place
        # strict=False: the frozen weights are deliberately absent from the checkpoint.
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"],
                       options=self._options(ignore_frozen_params=True, strict=False))
        self.scheduler.load_state_dict(
            torch.load(directory / SCHEDULER_FILE, map_location="cpu", weights_only=True))

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        # Collective: every rank sends its shards; rank 0 gets whole tensors on its CPU.
        # (A sharded state dict handed to save_pretrained is what writes nothing elsewhere.)
        return get_model_state_dict(
            self.model, options=self._options(full_state_dict=True, cpu_offload=True))
