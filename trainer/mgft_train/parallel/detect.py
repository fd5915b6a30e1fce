"""What actually ran, read from the objects, not from the flags.

On CPU, popular stacks silently fall back to one process or plain DDP; metrics.json records
the strategy found here, with the evidence (wrapper, DTensor placements, DeepSpeed stage).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mgft_train.parallel import zero3_linear


def strategy_that_ran(model: torch.nn.Module) -> tuple[str, dict[str, Any]]:
    """(strategy name as --strategy spells it, evidence) for the object the loop trained."""
    if _is_deepspeed(model):
        return _deepspeed(model)
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    sharded = _fsdp(inner)
    if sharded is not None:
        return "fsdp", sharded
    gpus = sorted({str(p.device) for p in inner.parameters() if p.device.type == "cuda"})
    if len(gpus) > 1:
        across = "ddp" if isinstance(model, DistributedDataParallel) else None
        return "mp", {"devices": gpus, "data_parallel": across}
    if isinstance(model, DistributedDataParallel):
        return "ddp", {"wrapper": type(model).__name__}
    if dist.is_initialized() and dist.get_world_size() > 1:
        # Several ranks but no wrapper: each trains alone. Say so loudly.
        return "unwrapped", {"wrapper": None}
    return "single", {"wrapper": None}


def _is_deepspeed(model: torch.nn.Module) -> bool:
    if "deepspeed" not in sys.modules:
        return False
    from deepspeed import DeepSpeedEngine

    return isinstance(model, DeepSpeedEngine)


def _device_name(offload: Any) -> str | None:
    """An offload config's device: an OffloadDeviceEnum in older DeepSpeed, a plain "cpu"
    string in 0.19 (pydantic's use_enum_values)."""
    if not offload:
        return None
    return str(getattr(offload.device, "value", offload.device))


def _deepspeed(engine: Any) -> tuple[str, dict[str, Any]]:
    stage = engine.zero_optimization_stage()
    offload_opt = engine.zero_offload_optimizer()
    offload_param = engine.zero_offload_param()
    params = list(engine.module.parameters())
    evidence = {
        "deepspeed_stage": stage,
        "optimizer": type(engine.optimizer).__name__,
        # ZeRO-2 and up partition gradients; ZeRO-3 also the weights (ds_id, empty data).
        "partition_gradients": bool(getattr(engine.optimizer, "partition_gradients", stage >= 3)),
        "partitioned_params": sum(1 for p in params if hasattr(p, "ds_id")),
        "params": len(params),
        "offload_optimizer": _device_name(offload_opt),
        "offload_param": _device_name(offload_param),
        # ZeRO-3: linears routed through zero3_linear (a frozen weight's input is not saved).
        "referenced_linears": zero3_linear.referenced(engine.module),
    }
    offloaded = stage == 3 and offload_opt is not None and offload_param is not None and \
        evidence["offload_optimizer"] == "cpu" and evidence["offload_param"] == "cpu"
    return ("zero3-offload" if offloaded else f"zero{stage}"), evidence


def _fsdp(model: torch.nn.Module) -> dict[str, Any] | None:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    units = sum(1 for m in model.modules() if isinstance(m, FSDPModule))
    if units == 0:
        return None
    params = list(model.parameters())
    dtensors = [p for p in params if isinstance(p, DTensor)]
    return {"fsdp_units": units, "dtensor_params": len(dtensors), "params": len(params),
            "placements": sorted({str(tuple(p.placements)) for p in dtensors})}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)
