"""QLoRA's 4-bit base: bitsandbytes nf4 with double quantization, and what was loaded."""

from __future__ import annotations

from typing import Any

import torch
from mgft.spec.job import Strategy

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


def build_random_4bit(config: Any, strategy: Strategy, device: torch.device,
                      compute_dtype: torch.dtype, attention: dict[str, str]) -> torch.nn.Module:
    """--tuning qlora --random-init: the model's skeleton on the meta device, then one module
    at a time given random weights on `device`, each linear quantized to nf4 at once and its
    bf16 copy freed. So peak memory stays near the 4-bit size plus one layer's bf16 weight:
    a 70B model, 140 GB in bf16, never exists at full size. Initialised as transformers
    initialises the same config (its own _init_weights; normal(0, initializer_range) for
    the weights that become 4-bit), with the structure from_pretrained's quantizer gives."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    quantization = bnb_config(strategy, compute_dtype)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=compute_dtype, **attention)
    # What from_pretrained's quantizer keeps in 16 bits: the output head.
    model = replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"],
                                    quantization_config=quantization)
    std = config.get_text_config().initializer_range
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            full = torch.empty(module.out_features, module.in_features, dtype=compute_dtype,
                               device=device).normal_(0.0, std)
            # module=: the layer keeps the quantization state too, where bitsandbytes finds
            # it again after FSDP swaps the weight for its shard (as from_pretrained does).
            module.weight = bnb.nn.Params4bit(
                full, requires_grad=False, quant_type="nf4", compress_statistics=True,
                quant_storage=quantization.bnb_4bit_quant_storage, module=module).to(device)
            del full
            if module.bias is not None:
                module.bias = torch.nn.Parameter(torch.zeros(module.out_features,
                                                             dtype=compute_dtype, device=device),
                                                 requires_grad=False)
        elif any(t.is_meta for t in [*module.parameters(recurse=False),
                                     *module.buffers(recurse=False)]):
            module.to_empty(device=device, recurse=False)
            model._init_weights(module)  # weights and non-persistent buffers (rotary)
    model.tie_weights()  # to_empty gave a tied head a tensor of its own
    model.config.quantization_config = quantization
    model.is_loaded_in_4bit = True  # what peft asks of a from_pretrained 4-bit model
    return model


def held_bytes(model: torch.nn.Module) -> dict[str, int] | None:
    """Bytes of the 4-bit base weights this rank holds, and of the whole model's: what shows
    that FSDP or ZeRO-3 shard the quantized weights rather than replicate them."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    from torch.distributed.tensor import DTensor

    weights = [m.weight for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if not weights:
        return None
    local = whole = 0
    for w in weights:
        size = w.element_size()
        if isinstance(w, DTensor):
            local += w.to_local().numel() * size
            whole += w.numel() * size
        elif hasattr(w, "ds_tensor"):  # ZeRO-3: this rank's partition; ds_numel is the whole
            local += w.ds_tensor.numel() * size
            whole += w.ds_numel * size
        else:
            local += w.numel() * size
            whole += w.numel() * size
    return {"local": local, "whole": whole}


def keep_training_layout(model: torch.nn.Module) -> None:
    """bitsandbytes repacks a 4-bit weight in place for a faster CPU kernel the first time a
    layer runs in eval mode without gradients (mgft's evaluation passes) on a CPU with
    AVX512-BF16. The repacked layout is not the one ZeRO-3 partitioned, nor the one a
    checkpoint saves: a save after an evaluation then fails. Training speed is unaffected."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
