from __future__ import annotations

import torch
from mgft_train.distributed import Dist
from mgft_train.parallel.engine import Engine


def engine(device: str, adapter_dtype: torch.dtype) -> Engine:
    base = torch.nn.Linear(4, 4).to(torch.bfloat16).requires_grad_(False)
    adapter = torch.nn.Linear(4, 4).to(adapter_dtype)
    model = torch.nn.Sequential(base, adapter)
    ctx = Dist(rank=0, local_rank=0, world_size=1, device=torch.device(device), backend="none")
    optimizer = torch.optim.AdamW(adapter.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return Engine(model, model, optimizer, scheduler, ctx)


def test_fp32_adapters_on_a_gpu_compute_under_bf16_autocast():
    ctx = engine("cuda", torch.float32).computing()
    assert isinstance(ctx, torch.autocast)
    assert (ctx.device, ctx.fast_dtype) == ("cuda", torch.bfloat16)


def test_no_autocast_on_cpus_or_when_the_trainable_weights_are_bf16_already():
    for device, dtype in (("cpu", torch.float32), ("cuda", torch.bfloat16)):
        assert not isinstance(engine(device, dtype).computing(), torch.autocast)


def test_under_autocast_peft_stops_copying_adapter_inputs_to_fp32(tiny):
    from mgft.spec.job import TrainSpec
    from mgft_train import model

    net = model.load_model(TrainSpec(model=str(tiny.model_dir), dataset="d"),
                           Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"),
                                backend="none"))
    layers = [m for m in net.modules() if hasattr(m, "cast_input_dtype_enabled")]
    assert layers and all(m.cast_input_dtype_enabled for m in layers)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad])
    cuda = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cuda", 0),
                backend="none")
    Engine(net, net, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
           cuda)
    assert not any(m.cast_input_dtype_enabled for m in layers)
