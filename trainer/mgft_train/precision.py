"""--precision: how trained weights are stored, and the optimizers that keep small updates
when they are bf16. One policy on every strategy:

    mixed       fp32 master weights, bf16 compute (the default). FSDP keeps fp32 shards and
                gathers them in bf16 (its MixedPrecisionPolicy); ZeRO keeps the masters in
                DeepSpeed's optimizer (bf16 mode); peft keeps LoRA adapters fp32 and the
                engine autocasts them; ddp and mp load bf16 weights and `MasterAdamW` steps
                fp32 copies of them, so their forward pass is FSDP's and ZeRO's.
    bf16-kahan  bf16 weights; `KahanAdamW` carries each step's rounding error into the next.
    bf16        bf16 weights and AdamW states: an update under half of bf16's spacing at the
                weight (0.2-0.4% of it) is rounded away, every step, so a small learning
                rate stops training without a sign.

Kahan compensation rather than stochastic rounding: it is deterministic (a rerun or a
resumed run reproduces the weights; strategies compare exactly), and its error stays within
about one bf16 spacing of the fp32 run instead of growing with the square root of the steps.
It costs a bf16 compensation per weight.

CPUs train in fp32 (their bf16 matmuls are slow): there the weights are their own master
copy, whatever the setting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from mgft.spec.job import Precision, Strategy, TrainSpec, Tuning
from torch.distributed.tensor import DTensor

FP32 = torch.float32
# MasterAdamW makes fp32 gradients for about this many elements at a time (512 MiB); a
# larger weight (an 8B model's embedding) goes alone. mgft plan counts it (step_extra).
MASTER_CHUNK = 2**27
# KahanAdamW computes in fp32 over pieces of this many elements, with KAHAN_TEMPORARIES
# fp32 temporaries each: the whole of a weight at once would be 10 GB for an embedding.
KAHAN_PIECE = 2**25
KAHAN_TEMPORARIES = 5


def trained_dtype(spec: TrainSpec, low: torch.dtype) -> torch.dtype:
    """How trained weights are stored; `low` is the device's compute dtype (bf16 on GPUs,
    fp32 on CPUs)."""
    if low == FP32 or spec.precision is not Precision.MIXED:
        return low
    if spec.tuning is not Tuning.FULL or spec.strategy is Strategy.FSDP:
        return FP32  # peft's adapters; FSDP's shards, cast to bf16 for compute
    return low  # ddp and mp: MasterAdamW holds fp32 copies; ZeRO: DeepSpeed's optimizer


def load_dtype(spec: TrainSpec, low: torch.dtype) -> torch.dtype:
    """The dtype the model is loaded in: the trained weights' under full fine-tuning, `low`
    for a frozen base (LoRA adapters are added after, see `store_adapters`)."""
    return trained_dtype(spec, low) if spec.tuning is Tuning.FULL else low


def store_adapters(model: torch.nn.Module, spec: TrainSpec,
                   low: torch.dtype) -> torch.nn.Module:
    """peft makes adapters fp32; bf16 and bf16-kahan keep them in bf16, as asked."""
    dtype = trained_dtype(spec, low)
    if dtype != FP32:
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.to(dtype)
    return model


class MasterAdamW(torch.optim.AdamW):
    """AdamW on fp32 master copies of low-precision weights. The model computes with its
    bf16 weights; each step copies their gradients to fp32 (a chunk at a time), updates
    the masters and rounds them into the weights. 16 bytes per parameter: bf16 weight and
    gradient, fp32 master, exp_avg and exp_avg_sq."""

    master_dtype = FP32

    def __init__(self, weights: Iterable[torch.Tensor], *, chunk: int = MASTER_CHUNK,
                 **adamw: Any) -> None:
        self.weights = list(weights)
        masters = [w.detach().to(FP32, copy=True) for w in self.weights]
        super().__init__(masters, **adamw)
        self.pairs = list(zip(self.weights, masters, strict=True))
        self.chunks = _chunks(self.pairs, chunk)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        # AdamW skips a parameter without a gradient: giving the masters theirs one chunk at
        # a time steps them all, with one chunk's fp32 gradients alive at a time.
        for chunk in self.chunks:
            stepped = [(w, m) for w, m in chunk if w.grad is not None]
            for weight, master in stepped:
                master.grad = weight.grad.to(FP32)
            super().step()
            for weight, master in stepped:
                weight.copy_(master)
                master.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for weight, master in self.pairs:
            master.grad = None
            if set_to_none:
                weight.grad = None
            elif weight.grad is not None:
                weight.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"master_weights": [m for _, m in self.pairs]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        masters = state.pop("master_weights")
        super().load_state_dict(state)
        with torch.no_grad():
            for (weight, master), saved in zip(self.pairs, masters, strict=True):
                master.copy_(saved)
                weight.copy_(master)


def _chunks(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
            limit: int) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    out: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[]]
    size = 0
    for pair in pairs:
        if out[-1] and size + pair[0].numel() > limit:
            out.append([])
            size = 0
        out[-1].append(pair)
        size += pair[0].numel()
    return out


class KahanAdamW(torch.optim.Optimizer):
    """AdamW for bf16 weights that keeps what rounding drops: each step adds the last step's
    rounding error (a bf16 compensation per weight) to its update before rounding into the
    weight, and keeps the new error. The weights then stay within about one bf16 spacing of
    an fp32 run, however small each update.

    exp_avg is bf16 (beta1 0.9 moves it 10% of the way each step, far above bf16's
    resolution); exp_avg_sq is fp32: beta2 0.999 moves it 0.1% each step, below bf16's
    resolution, so in bf16 it would only ratchet up on large gradients. 12 bytes per
    parameter: bf16 weight, gradient, exp_avg and compensation, fp32 exp_avg_sq. The math is
    torch's AdamW, in fp32; weights may be DTensors (FSDP), updated shard by shard."""

    master_dtype = None

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                state = self.state[weight]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(weight)
                    state["exp_avg_sq"] = torch.zeros_like(weight, dtype=FP32)
                    state["compensation"] = torch.zeros_like(weight)
                state["step"] += 1
                kahan_adamw(weight, weight.grad, state, step=int(state["step"].item()),
                            lr=group["lr"], betas=group["betas"], eps=group["eps"],
                            weight_decay=group["weight_decay"])

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch casts every loaded state to its parameter's dtype: exp_avg_sq would come
        # back bf16. Put the saved fp32 values back.
        saved = {i: s["exp_avg_sq"] for i, s in state_dict["state"].items()
                 if "exp_avg_sq" in s}
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for i, value in saved.items():
            param = params[int(i)]
            self.state[param]["exp_avg_sq"] = value.to(device=param.device, dtype=FP32)


def kahan_adamw(weight: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor], *,
                step: int, lr: float, betas: tuple[float, float], eps: float,
                weight_decay: float) -> None:
    """One compensated AdamW update of `weight`, in place, piece by piece."""
    beta1, beta2 = betas
    step_size = lr / (1 - beta1**step)
    root = math.sqrt(1 - beta2**step)
    tensors = [_local(t) for t in (weight, grad, state["exp_avg"], state["exp_avg_sq"],
                                   state["compensation"])]
    for w, g, m, v, c in _pieces(tensors):
        g32 = g.to(FP32)
        m32 = m.to(FP32, copy=True).lerp_(g32, 1 - beta1)
        m.copy_(m32)
        v.mul_(beta2).addcmul_(g32, g32, value=1 - beta2)
        w32 = w.to(FP32, copy=True)
        update = m32.div_(v.sqrt().div_(root).add_(eps)).mul_(-step_size)
        if weight_decay:
            update.add_(w32, alpha=-lr * weight_decay)
        update.add_(c.to(FP32))  # what rounding dropped from earlier updates
        w.copy_(w32 + update)  # rounds to the weight's dtype
        # w - w32 is exact in fp32 (two nearby bf16 values): the rest is what was dropped.
        c.copy_(update.sub_(w.to(FP32) - w32))


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's shard on this rank (AdamW is elementwise), or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _pieces(tensors: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, ...]]:
    if all(t.is_contiguous() for t in tensors):
        yield from zip(*(t.view(-1).split(KAHAN_PIECE) for t in tensors), strict=True)
    else:
        yield tuple(tensors)


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def describe(spec: TrainSpec, engine: Any) -> dict[str, Any]:
    """metrics.json's record of the precision that ran, read from the engine's weights and
    optimizer (DeepSpeed's wraps the AdamW it steps)."""
    optimizer = getattr(engine.optimizer, "optimizer", engine.optimizer)
    states = {key: dtype_name(value.dtype) for state in optimizer.state.values()
              for key, value in state.items() if key != "step" and torch.is_tensor(value)}
    return {"setting": spec.precision.value,
            "weights": dtype_name(engine.trainable[0].dtype),
            "compute": dtype_name(engine.compute_dtype()),
            "master_weights": dtype_name(engine.master_dtype()),
            "optimizer": type(optimizer).__name__,
            "optimizer_states": states}
