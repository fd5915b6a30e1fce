"""QLoRA's 4-bit base: bitsandbytes nf4 with double quantization, and what was loaded."""

from __future__ import annotations

from typing import Any

import torch
from mgft.spec import Strategy

# Sharding strategies split parameters as float tensors: the packed 4-bit weights must be
# stored in the same float dtype as the rest, or FSDP/ZeRO-3 cannot flatten them together.
SHARDED = frozenset({Strategy.FSDP, Strategy.ZERO3})


def bnb_config(strategy: Strategy, compute_dtype: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    storage = compute_dtype if strategy in SHARDED else torch.uint8
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype,
                              bnb_4bit_quant_storage=storage)


def describe(model: torch.nn.Module) -> dict[str, Any] | None:
    """The 4-bit layers really in the model (None when there are none)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if not layers:
        return None
    state = layers[0].weight.quant_state  # read before FSDP/ZeRO-3 swap the weights out
    return {"linear4bit_layers": len(layers),
            "quant_type": getattr(state, "quant_type", None),
            "double_quant": bool(getattr(state, "nested", False)),
            "compute_dtype": str(layers[0].compute_dtype).removeprefix("torch."),
            "storage_dtype": str(layers[0].weight.dtype).removeprefix("torch.")}
