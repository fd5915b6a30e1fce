"""ZeRO-3's linear layers: a frozen layer saves no input for the backward pass.

When `deepspeed.initialize` partitions a model for ZeRO-3 it swaps
`torch.nn.functional.linear` for its own (`memory_efficient_linear`), so that the backward
re-reads each weight through its parameter instead of keeping the copy gathered for the
forward. That function saves the layer's input whatever the weight, though the input only
serves the weight's gradient. In a LoRA model with adapter dropout (the default) the frozen
base layers' inputs are saved by nothing else: per token and block, the two normed hidden
states and the MLP's gated product, plus lm_head's input once. For an 8B Llama, 1.45 MB per
token: 6.9 GiB per GPU at 5 x 1024 tokens, of the 8.0 GiB by which 4xH200 measured ZeRO-3
above `mgft plan`, which counts no such inputs (docs/plan.md).

`ReferencedWeight` saves the parameter by reference, as DeepSpeed's does, and the input only
when the weight trains. Full fine-tuning saves what it did before.
"""

from __future__ import annotations

import types
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch


class ReferencedWeight(torch.autograd.Function):
    """y = x Wᵀ + b, saving W by reference and x only if W needs a gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        out = x.matmul(weight.t())
        return out if bias is None else out + bias

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        rows = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[0]:
            with _gathered(weight):
                grad_x = grad.matmul(weight)
        if ctx.needs_input_grad[1]:
            grad_w = rows.t().matmul(x.reshape(-1, x.shape[-1]))
        if ctx.needs_input_grad[2]:
            grad_b = rows.sum(0)
        return grad_x, grad_w, grad_b


def _gathered(weight: torch.Tensor) -> AbstractContextManager[Any]:
    """DeepSpeed gathers a block's weights again before its backward; should one still be
    released here, gather it for this product and release it after."""
    if weight.numel() > 0 or not hasattr(weight, "ds_id"):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters([weight])


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return ReferencedWeight.apply(x, self.weight, self.bias)


def reference_weights(model: torch.nn.Module) -> int:
    """Route every plain `nn.Linear` of `model` through `ReferencedWeight`; returns how many.
    Subclasses (bitsandbytes' 4-bit layers) keep their own forward."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.forward = types.MethodType(_forward, module)
            count += 1
    return count


def referenced(model: torch.nn.Module) -> int:
    """How many layers `reference_weights` routed (the evidence metrics.json records)."""
    return sum(1 for m in model.modules()
               if getattr(m.__dict__.get("forward"), "__func__", None) is _forward)
