from __future__ import annotations

import pytest
import torch
from mgft.spec.job import Strategy, TrainSpec
from mgft.spec.parallel_dims import ParallelDims
from mgft_train.optim import MAX_GRAD_NORM
from mgft_train.parallel import zero
from mgft_train.parallel.zero import STAGES


def spec(strategy: Strategy, **kw) -> TrainSpec:
    return TrainSpec(model="m", dataset="d", strategy=strategy, **kw)


def deepspeed_config(train: TrainSpec, stage: int, world: int, *, bf16: bool) -> dict:
    dims = ParallelDims(strategy=train.strategy, world_size=world, devices_per_process=1,
                        micro_batch=train.micro_batch, grad_accum=train.grad_accum)
    return zero.deepspeed_config(train, stage, dims, bf16=bf16)


@pytest.mark.parametrize("strategy,stage", [(Strategy.ZERO1, 1), (Strategy.ZERO2, 2),
                                            (Strategy.ZERO3, 3), (Strategy.ZERO3_OFFLOAD, 3)])
def test_stage_and_batch_sizes_come_from_the_spec(strategy, stage):
    assert STAGES[strategy] == stage
    config = deepspeed_config(spec(strategy, micro_batch=3, grad_accum=5), stage, world=8,
                              bf16=True)
    assert config["zero_optimization"]["stage"] == stage
    assert config["train_micro_batch_size_per_gpu"] == 3
    assert config["gradient_accumulation_steps"] == 5
    assert config["train_batch_size"] == 3 * 5 * 8
    assert config["gradient_clipping"] == MAX_GRAD_NORM
    assert config["bf16"] == {"enabled": True}


def test_no_optimizer_block_so_deepspeed_builds_no_fused_adam():
    config = deepspeed_config(spec(Strategy.ZERO2), 2, world=2, bf16=False)
    assert "optimizer" not in config and "scheduler" not in config  # ours are passed in
    assert config["zero_allow_untested_optimizer"] is True
    assert config["bf16"] == {"enabled": False}


def test_only_zero3_offload_offloads_optimizer_and_parameters():
    assert "offload_param" not in deepspeed_config(spec(Strategy.ZERO3), 3, 2, bf16=True)[
        "zero_optimization"]
    zero = deepspeed_config(spec(Strategy.ZERO3_OFFLOAD), 3, 2, bf16=True)["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu"


@pytest.mark.parametrize("strategy", list(STAGES))
def test_deepspeed_accepts_every_generated_config(strategy):
    """DeepSpeed's own parser (pydantic models) rejects unknown or misspelt keys."""
    from mgft_train.parallel.zero import import_deepspeed

    import_deepspeed()
    from deepspeed.runtime.config import DeepSpeedConfig

    parsed = DeepSpeedConfig(deepspeed_config(spec(strategy, micro_batch=2), STAGES[strategy],
                                              world=1, bf16=False))
    assert parsed.zero_optimization_stage == STAGES[strategy]
    assert parsed.train_batch_size == 2
    assert (parsed.zero_config.offload_param is not None) is (strategy is Strategy.ZERO3_OFFLOAD)


def test_zero3_keeps_small_tensors_whole_and_prefetches_blocks():
    """LoRA's A/B matrices (r x hidden) and norms stay unpartitioned; a block's worth of
    weights is fetched ahead. Stages 1-2 do not take stage-3 keys."""
    zero3 = deepspeed_config(spec(Strategy.ZERO3), 3, 4, bf16=True)["zero_optimization"]
    assert zero3["stage3_param_persistence_threshold"] >= 16 * 14336  # lora_B of down_proj, 8B
    assert zero3["stage3_prefetch_bucket_size"] > 4096 * 14336 * 3  # one 8B block's MLP
    zero2 = deepspeed_config(spec(Strategy.ZERO2), 2, 4, bf16=True)["zero_optimization"]
    assert not any(k.startswith("stage3_") for k in zero2)
    assert zero2["overlap_comm"] and zero2["contiguous_gradients"]


def test_zero3_gathers_each_transformer_block_whole(tiny):
    """Leaves: one fetch (and one hook pair) per block, not one per LoRA sub-module; the
    embedding's output requires grad so the first block releases after its adapters' grads."""
    from deepspeed.utils import z3_leaf_module
    from mgft_train import model
    from mgft_train.distributed import Dist
    from mgft_train.parallel.zero import gather_whole_blocks

    cpu = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")
    net = model.load_model(TrainSpec(model=str(tiny.model_dir), dataset="d"), cpu)
    gather_whole_blocks(net)
    leaves = [n for n, m in net.named_modules() if z3_leaf_module(m)]
    assert len(leaves) == net.config.num_hidden_layers
    assert all(n.rsplit(".", 1)[-1].isdigit() and ".layers." in n for n in leaves)
    embeddings = net.get_input_embeddings()
    assert embeddings(torch.tensor([[1, 2]])).requires_grad
