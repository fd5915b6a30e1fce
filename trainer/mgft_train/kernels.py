"""Faster kernels that change how the model computes, not what it computes.

- Liger (`--kernels`): Triton RMSNorm, SwiGLU and RoPE, and a fused linear cross-entropy that
  computes the loss chunk by chunk from the last hidden states, so the (tokens x vocab) logits
  never exist. Applied by patching transformers' classes, so it must run before the model is
  built. Not under ZeRO-3: the fused loss reads lm_head.weight directly, and ZeRO-3 only
  gathers a partitioned weight when its module's forward runs, which this skips.
- Varlen attention for packed batches: the micro-batch is one row of samples laid end to
  end, and flash attention runs over each sample alone (cu_seqlens), so no (tokens x tokens)
  mask is built and no work is spent on pairs that the block-diagonal mask would discard.
  Registered with transformers as the attention implementation `mgft_varlen`; batches without
  cu_seqlens (evaluation, padded batches) go through plain sdpa with sdpa's own masks.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from mgft.spec import Kernels, Strategy, TrainSpec

from mgft_train.errors import UsageError

VARLEN = "mgft_varlen"
# ZeRO-3 partitions lm_head.weight and gathers it only around lm_head's own forward.
NO_FUSED_LOSS = frozenset({Strategy.ZERO3, Strategy.ZERO3_OFFLOAD})
_applied: list[str] = []  # what apply_liger patched in this process (patches are global)


def applied() -> list[str]:
    return [f"liger:{name}" for name in _applied]


def apply_liger(spec: TrainSpec, device: torch.device, model_type: str) -> list[str]:
    """Patch transformers' `model_type` classes with Liger's kernels; returns what was applied.

    auto: on CUDA when liger-kernel is installed and knows the model type, else nothing.
    liger: the same, but anything missing is an error rather than a quiet fallback.
    """
    if spec.kernels is Kernels.NONE or (spec.kernels is Kernels.AUTO and device.type != "cuda"):
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
    wanted = {"rms_norm": True, "swiglu": True, "rope": True, "cross_entropy": False,
              "fused_linear_cross_entropy": spec.strategy not in NO_FUSED_LOSS}
    accepted = inspect.signature(patch).parameters
    chosen = {k: v for k, v in wanted.items() if k in accepted}
    patch(**chosen)
    _applied[:] = sorted(k for k, on in chosen.items() if on)
    return list(_applied)


def varlen_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def register_varlen() -> str:
    """Make `attn_implementation=mgft_varlen` known to transformers (idempotent)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(VARLEN, varlen_attention)
    AttentionMaskInterface.register(VARLEN, sdpa_mask)  # for batches without cu_seqlens
    return VARLEN


def varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: query (batch, heads, tokens, dim), key and value
    (batch, kv_heads, tokens, dim); returns (batch, tokens, heads, dim)."""
    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError("varlen attention takes one packed row per micro-batch")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    longest = int(kwargs["max_length_q"])
    if q.is_cuda and not dropout:  # torch's varlen kernel has no attention dropout
        out = _flash_varlen(q, k, v, cu_seqlens, longest, scaling)
    else:  # the same arithmetic, one sample at a time (CPUs, and models with dropout)
        out = _per_sample(q, k, v, cu_seqlens, scaling, dropout)
    return out.unsqueeze(0), None


def _flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                  longest: int, scaling: float | None) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    kwargs: dict[str, Any] = {"scale": scaling} if "scale" in params else {}
    # torch 2.9 spelled causal as is_causal; 2.10+ as a (left, right) window with right = 0.
    kwargs |= {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    return varlen_attn(q, k, v, cu, cu, longest, longest, **kwargs)


def _per_sample(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                scaling: float | None, dropout: float = 0.0) -> torch.Tensor:
    bounds = cu_seqlens.tolist()
    parts = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (heads, tokens, dim)
        parts.append(F.scaled_dot_product_attention(
            qs, ks, vs, is_causal=True, scale=scaling, dropout_p=dropout,
            enable_gqa=ks.shape[0] != qs.shape[0]).transpose(0, 1))
    return torch.cat(parts)
