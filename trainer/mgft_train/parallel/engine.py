"""What the training loop drives: a model made parallel, with its optimizer and schedule.

`Engine` is the plain-torch version (single process, DDP, FSDP, mp). DeepSpeed owns its own
optimizer step, clipping and checkpoint format, so `zero.ZeroEngine` overrides those parts.
Every strategy module builds one with a single function (`ddp.apply`, `fsdp.apply`, ...).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch

from mgft_train.distributed import Dist
from mgft_train.optim import MAX_GRAD_NORM

MODEL_FILE = "model.pt"  # trainable parameters only: the frozen base is re-read from --model
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"


class Engine:
    """A replicated model (every rank holds all of it): rank 0 writes its state, all read it."""

    def __init__(self, model: torch.nn.Module, base: torch.nn.Module,
                 optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, ctx: Dist) -> None:
        self.model = model  # what forward is called on: the wrapper, if there is one
        self.base = base  # the unwrapped (Peft)model: what is saved
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.ctx = ctx
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.autocast = ctx.device.type == "cuda" and any(
            p.dtype == torch.float32 for p in self.trainable)
        if self.autocast:
            # peft would still copy each adapter's input to fp32 first; autocast casts the
            # (small) adapter weights instead.
            for module in model.modules():
                if hasattr(module, "cast_input_dtype_enabled"):
                    module.cast_input_dtype_enabled = False

    # --- one optimizer step ---------------------------------------------------------------
    def accumulating(self, last: bool) -> AbstractContextManager[Any]:
        """Context for one micro-batch's forward/backward; only the last one syncs gradients."""
        return nullcontext()

    def computing(self) -> AbstractContextManager[Any]:
        """Context for a forward pass. A replicated LoRA model on a GPU holds a bf16 base and
        fp32 adapters (peft keeps them fp32 so small updates are not rounded away), and
        peft then runs every adapter in fp32; autocast runs them in bf16, as DeepSpeed's
        bf16 mode and FSDP's MixedPrecisionPolicy do for theirs, while the weights and the
        optimizer stay fp32."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else nullcontext()

    def compute_dtype(self) -> torch.dtype:
        """What the forward pass computes in: bf16 where weights are cast to it (autocast here,
        FSDP's policy and DeepSpeed's bf16 mode on GPUs alike), else the weights' dtype."""
        return torch.bfloat16 if self.autocast else self.trainable[0].dtype

    def master_dtype(self) -> torch.dtype | None:
        """Where the updates accumulate, if not in low-precision weights: the optimizer's
        master copy (precision.MasterAdamW), or fp32 weights themselves."""
        own = getattr(self.optimizer, "master_dtype", None)
        return own or (torch.float32 if self.trainable[0].dtype == torch.float32 else None)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.trainable, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    # --- checkpoints (collective: every rank calls) -----------------------------------------
    def save_state(self, directory: Path) -> None:
        if self.ctx.is_main:
            trainable = {n: p.detach().cpu() for n, p in self.base.named_parameters()
                         if p.requires_grad}
            torch.save(trainable, directory / MODEL_FILE)
            torch.save(self.optimizer.state_dict(), directory / OPTIMIZER_FILE)
            torch.save(self.scheduler.state_dict(), directory / SCHEDULER_FILE)

    def load_state(self, directory: Path) -> None:
        trainable = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
        load_trainable(self.base, trainable)
        self.optimizer.load_state_dict(
            torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
        self.scheduler.load_state_dict(
            torch.load(directory / SCHEDULER_FILE, map_location="cpu", weights_only=True))

    # --- the final save (collective) --------------------------------------------------------
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight, whole, on rank 0's CPU (other ranks get {}): what the saves write."""
        if not self.ctx.is_main:
            return {}
        return {k: v.detach().cpu() for k, v in self.base.state_dict().items()}


def load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load exactly the trainable parameters a checkpoint holds; anything else is a mismatch."""
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise RuntimeError(f"checkpoint does not match the model: missing {missing[:3]}, "
                           f"unexpected {extra[:3]}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
