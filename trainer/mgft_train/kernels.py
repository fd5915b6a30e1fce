"""Liger's kernels (`--kernels`): faster kernels that change how the model computes, not what.

Triton RMSNorm, SwiGLU/GeGLU and RoPE, and a fused linear cross-entropy that computes the
loss chunk by chunk from the last hidden states, so the (tokens x vocab) logits never exist.
Applied by patching transformers' classes, so it must run before the model is built. Not
under ZeRO-3: the fused loss reads lm_head.weight directly, and ZeRO-3 only gathers a
partitioned weight when its module's forward runs, which this skips. Packed attention is
in attention.py.
"""

from __future__ import annotations

import inspect

import torch
from mgft.spec.job import Compile, Kernels, Strategy, TrainSpec

from mgft_train.errors import UsageError

# ZeRO-3 partitions lm_head.weight and gathers it only around lm_head's own forward.
NO_FUSED_LOSS = frozenset({Strategy.ZERO3, Strategy.ZERO3_OFFLOAD})
_applied: list[str] = []  # what apply_liger patched in this process (patches are global)


def applied() -> list[str]:
    return [f"liger:{name}" for name in _applied]


def apply_liger(spec: TrainSpec, device: torch.device, model_type: str) -> list[str]:
    """Patch transformers' `model_type` classes with Liger's kernels; returns what was applied.

    auto: on CUDA when liger-kernel is installed and knows the model type, else nothing.
    liger: the same, but anything missing is an error rather than a quiet fallback.
    fp8: as auto (the FP8 base weights are fp8.py's, applied once the model is built).
    """
    if spec.kernels is Kernels.NONE or (spec.kernels in (Kernels.AUTO, Kernels.FP8)
                                        and device.type != "cuda"):
        return []
    strict = spec.kernels is Kernels.LIGER
    if device.type != "cuda":
        raise UsageError("--kernels", "liger", "Liger's kernels are Triton GPU kernels and this "
                         "run is on the CPU", "use --kernels auto or none")
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError as err:
        if strict:
            raise UsageError("--kernels", "liger", f"liger-kernel cannot be imported ({err})",
                             "pip install liger-kernel, or use --kernels auto") from None
        return []
    patch = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if patch is None:
        if strict:
            raise UsageError("--kernels", "liger", f"Liger has no kernels for model type "
                             f"{model_type!r}", "use --kernels auto or none")
        return []
    # Compiled blocks (--compile blocks): Inductor fuses the block's ops itself, and Liger's
    # RoPE would break the graph (compiled.py).
    liger_blocks = spec.compile is Compile.NONE
    wanted = {"rms_norm": liger_blocks, "swiglu": liger_blocks, "rope": liger_blocks,
              "cross_entropy": False,
              "fused_linear_cross_entropy": spec.strategy not in NO_FUSED_LOSS}
    accepted = inspect.signature(patch).parameters
    chosen = {k: v for k, v in wanted.items() if k in accepted}
    patch(**chosen)
    _applied[:] = sorted(k for k, on in chosen.items() if on)
    return list(_applied)
