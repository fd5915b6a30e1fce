"""Attention over packed rows, computed as the model's own attention computes it.

A packed micro-batch is one row of samples laid end to end (`cu_seq_lens` marks where each
starts). transformers calls the registered implementation `mgft_varlen` with the layer's
keyword arguments, and every one that changes the result is honoured or refused, never
dropped: a causal mask inside each sample, the layer's sliding window (Mistral, Qwen, Gemma-2
and -3 on alternate layers), attention-logit softcapping (Gemma-2), the scale, grouped
key/value heads and dropout. Which kernel runs is decided per call from what the layer asks:

- `varlen`: torch's flash varlen kernel (GPUs): causal, sliding window, GQA. It cannot
  softcap and has no dropout.
- `flex`: torch's flex_attention, compiled (GPUs): a document mask with the window, and a
  tanh score_mod for softcapping. Used for the layers varlen cannot serve.
- `per_sample`: each sample alone through dense math with the same mask and score functions
  as flex (CPUs, dropout, and GPUs without flex).

Batches without cu_seq_lens (evaluation, padded batches) go through sdpa with
transformers' masks, or dense math over those masks for a softcapping layer.
`used()` says which kernels ran and why, for metrics.json.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mgft_train.errors import UsageError

VARLEN = "mgft_varlen"
FORCE_ENV = "MGFT_BENCH_ATTENTION"  # bench/fidelity.py: varlen, flex or per_sample
# Keyword arguments that describe the batch or the cache, not what attention computes.
# (transformers' TransformersKwargs and what its layers add).
PLUMBING = frozenset({"position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q",
                      "max_length_k", "seq_idx", "num_items_in_batch", "use_cache",
                      "output_attentions", "output_hidden_states", "output_router_logits",
                      "cache_position", "past_key_values", "past_key_value",
                      "attention_type"})
_used: dict[str, str] = {}  # kernel -> why, for every kernel that ran in this process


@dataclass(frozen=True, slots=True)
class Features:
    """What a layer's attention computes beyond plain causal attention."""

    window: int | None = None  # a query sees this many tokens: itself and window - 1 before
    softcap: float | None = None  # scores become softcap * tanh(scores / softcap)

    @classmethod
    def of(cls, kwargs: dict[str, Any]) -> Features:
        unknown = {k: v for k, v in kwargs.items()
                   if k not in PLUMBING | {"sliding_window", "softcap", "is_causal"}
                   and v is not None}
        if unknown or kwargs.get("is_causal", True) is False:
            what = ", ".join(sorted(unknown)) or "is_causal=False"
            raise UsageError("--kernels", "auto", f"the model's attention asks for {what}, "
                             "which mgft's packed attention does not compute",
                             "use --kernels none (transformers' own attention)")
        window = kwargs.get("sliding_window")
        softcap = kwargs.get("softcap")
        return cls(window=int(window) if window else None,
                   softcap=float(softcap) if softcap else None)

    def mask_mod(self, doc: torch.Tensor) -> Callable[..., torch.Tensor]:
        """Whether query q may see key k: same sample, not ahead, inside the window
        (transformers: kv_idx > q_idx - sliding_window)."""
        window = self.window

        def allowed(b: Any, h: Any, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            keep = (doc[q] == doc[k]) & (k <= q)
            return keep & (q - k < window) if window is not None else keep

        return allowed

    def score_mod(self) -> Callable[..., torch.Tensor] | None:
        cap = self.softcap
        if cap is None:
            return None

        def capped(score: torch.Tensor, b: Any, h: Any, q: Any, k: Any) -> torch.Tensor:
            return torch.tanh(score / cap) * cap

        return capped

    def window_size(self) -> tuple[int, int]:
        """flash attention's (left, right): keys from q - left to q + right; -1 is unbounded."""
        return (self.window - 1 if self.window is not None else -1, 0)


def used() -> dict[str, str]:
    return dict(sorted(_used.items()))


def register() -> str:
    """Make `attn_implementation=mgft_varlen` known to transformers (idempotent)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(VARLEN, packed_attention)
    AttentionMaskInterface.register(VARLEN, sdpa_mask)  # for batches without cu_seq_lens
    return VARLEN


@functools.cache
def torch_kernels() -> frozenset[str]:
    """The fused kernels this torch has, looked up once: `varlen` (flash varlen with a
    window, torch 2.10+), `varlen_gqa` (it takes fewer k/v heads), `flex`."""
    found = set()
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        pass
    else:
        params = inspect.signature(varlen_attn).parameters
        found |= {name for name, arg in (("varlen", "window_size"), ("varlen_gqa", "enable_gqa"))
                  if arg in params}
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        pass
    else:
        found.add("flex")
    return frozenset(found)


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: query (batch, heads, tokens, dim), key and value
    (batch, kv_heads, tokens, dim); returns (batch, tokens, heads, dim)."""
    features = Features.of(kwargs)
    cu_seqlens = kwargs.get("cu_seq_lens_q")
    if cu_seqlens is None:
        return unpacked(module, query, key, value, attention_mask, dropout, scaling, features)
    if query.shape[0] != 1:
        raise ValueError("packed attention takes one packed row per micro-batch")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    longest = int(kwargs["max_length_q"])
    forced = os.environ.get(FORCE_ENV)
    if forced:  # benchmarks only: e.g. flex against varlen on a model both can serve
        kernel, why = forced, f"{FORCE_ENV}={forced}"
        if forced == "varlen" and features.softcap is not None:
            raise ValueError(f"{FORCE_ENV}=varlen: this layer softcaps, which varlen cannot")
    elif dropout:
        kernel, why = "per_sample", "attention dropout: the fused kernels have none"
    elif not q.is_cuda:
        kernel, why = "per_sample", "CPU"
    elif features.softcap is None and "varlen" in torch_kernels():
        kernel, why = "varlen", "flash varlen: causal, sliding window, GQA"
    elif "flex" in torch_kernels():
        kernel, why = "flex", ("logit softcapping: flash varlen cannot softcap"
                               if features.softcap is not None
                               else "this torch's flash varlen has no sliding window")
    else:
        kernel, why = "per_sample", "no varlen or flex kernel in this torch"
    _used[kernel] = why
    if kernel == "varlen":
        out = _varlen(q, k, v, cu_seqlens, longest, scaling, features)
    elif kernel == "flex":
        out = flex(q, k, v, cu_seqlens, scaling, features)
    else:
        out = _per_sample(q, k, v, cu_seqlens, scaling, features, dropout)
    return out.unsqueeze(0), None


def unpacked(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
             value: torch.Tensor, attention_mask: torch.Tensor | None, dropout: float,
             scaling: float | None, features: Features) -> tuple[torch.Tensor, None]:
    """A padded batch. transformers builds its mask per layer type (sliding window
    included), so sdpa is exact unless the layer softcaps; then the same dense math as
    `_per_sample`, over the mask transformers built."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    capped = features.score_mod()
    if capped is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling,
                                      sliding_window=features.window)
    k, v = (repeat_kv(t, query.shape[1] // key.shape[1]) for t in (key, value))
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = capped(torch.matmul(query, k.transpose(2, 3)) * scale, None, None, None, None)
    if attention_mask is None:  # sdpa_mask leaves out a purely causal mask
        idx = torch.arange(query.shape[2], device=query.device)
        attention_mask = features.mask_mod(torch.zeros_like(idx))(None, None, idx[:, None],
                                                                  idx[None, :])
    mask = attention_mask[..., : k.shape[-2]]
    # The lowest finite value, as eager's mask holds: a padding query whose window holds no
    # real key then gets finite garbage, not NaN that would reach real tokens through values.
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) \
        if mask.dtype == torch.bool else scores + mask
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, v).transpose(1, 2).contiguous(), None


def _varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
            longest: int, scaling: float | None, features: Features) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    kwargs: dict[str, Any] = {}
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        if "varlen_gqa" in torch_kernels():
            kwargs["enable_gqa"] = True
        else:  # torch 2.11
            k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    return varlen_attn(q, k, v, cu, cu, longest, longest, scale=scaling,
                       window_size=features.window_size(), **kwargs)


_compiled: dict[str, Any] = {}
_masks: dict[tuple[int, int, int | None], tuple[torch.Tensor, Any]] = {}


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
         scaling: float | None, features: Features, *, compiled: bool = True) -> torch.Tensor:
    """flex_attention over the packed row. The row is padded to a power of two, so that a
    run compiles a handful of shapes (packs are nearly full: little is wasted) rather than
    one per batch, which would exhaust torch.compile's recompile limit and fall back to
    unfused math. compiled=False: flex's reference implementation, forward only (how the CPU
    tests run this function)."""
    from torch.nn.attention.flex_attention import flex_attention

    tokens = q.shape[0]
    width = max(128, 1 << (tokens - 1).bit_length())
    if compiled and "flex" not in _compiled:
        _compiled["flex"] = torch.compile(flex_attention, dynamic=False)
    run = _compiled["flex"] if compiled else flex_attention
    pad = (0, 0, 0, 0, 0, width - tokens)  # (tokens, heads, dim): pad the token axis
    qh, kh, vh = (F.pad(t, pad).transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    out = run(qh, kh, vh, score_mod=features.score_mod(),
              block_mask=block_mask(cu_seqlens.to(q.device), width, features, compiled),
              scale=scaling, enable_gqa=kh.shape[1] != qh.shape[1])
    return out[0].transpose(0, 1)[:tokens]


def block_mask(cu_seqlens: torch.Tensor, width: int, features: Features, compiled: bool) -> Any:
    """One mask per batch and window, shared by every layer of the forward pass (building it
    costs as much as a layer's attention)."""
    from torch.nn.attention.flex_attention import create_block_mask

    key = (cu_seqlens.data_ptr(), width, features.window)
    hit = _masks.get(key)
    if hit is not None and hit[0] is cu_seqlens:
        return hit[1]
    doc = document_ids(cu_seqlens, width)
    mask = create_block_mask(features.mask_mod(doc), None, None, width, width,
                             device=cu_seqlens.device, _compile=compiled)
    if len(_masks) > 8:
        _masks.clear()
    _masks[key] = (cu_seqlens, mask)
    return mask


def document_ids(cu_seqlens: torch.Tensor, tokens: int) -> torch.Tensor:
    """The sample index of every token of the packed row."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    doc = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)
    if doc.numel() < tokens:  # trailing padding reads as one more sample
        doc = torch.cat([doc, doc.new_full((tokens - doc.numel(),), len(lengths))])
    return doc


def _per_sample(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                scaling: float | None, features: Features, dropout: float) -> torch.Tensor:
    """Each sample alone, dense, with the mask and score functions flex is given."""
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    capped = features.score_mod()
    bounds = cu_seqlens.tolist()
    parts = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (heads, tokens, dim)
        if ks.shape[0] != qs.shape[0]:
            ks, vs = (t.repeat_interleave(qs.shape[0] // t.shape[0], dim=0) for t in (ks, vs))
        idx = torch.arange(end - start, device=q.device)
        doc = torch.zeros_like(idx)
        allowed = features.mask_mod(doc)(None, None, idx[:, None], idx[None, :])
        if capped is None:
            out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=allowed, scale=scale,
                                                 dropout_p=dropout)
        else:
            scores = capped(torch.matmul(qs, ks.transpose(1, 2)) * scale, None, None, None, None)
            scores = scores.masked_fill(~allowed, float("-inf"))
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(qs.dtype)
            out = torch.matmul(F.dropout(probs, p=dropout), vs)
        parts.append(out.transpose(0, 1))
    return torch.cat(parts)
