"""--lora-dropout-recompute: LoRA dropout without its stored activations, recomputed in the
backward pass.

peft computes each adapter as lora_B(lora_A(dropout(x))). In training, autograd keeps the
dropout's output (for lora_A's weight gradient) and its mask, per adapted layer: with all 7
projections of a Llama block adapted, q, k and v each keep their own copy of the same
hidden states, and that is 117 KB per token per block at 8B, about 45% of a LoRA or QLoRA
run's activation memory (bench/PERF-NOTES.md §7).

Here lora_A and its dropout run as one function of x that keeps only x (and x is kept
anyway: the layer's other consumers, or the attention, hold it) and the random generator's
state; the backward pass recomputes the dropout and lora_A from that state with autograd's
own operators, so the masks, the losses and the gradients are those of peft's own modules.
The recomputation is one dropout and one rank-r matmul per adapter: small beside the
block's matmuls on the GPU, but not on the CPU that launches them: a step runs it for
every adapter (224 at 8B), and on an H100 host, where a step is bound by its kernel
launches, the fold costs about a quarter of the tokens/s (bench/PERF-NOTES.md §7). So it
is the user's choice, for memory. It is an autograd.Function rather than
torch.utils.checkpoint, whose bookkeeping (frames, hooks, a fork of every generator) cost
twice as much CPU per adapter (1.16 against 0.62 ms there; bench/lora_dropout_cost.py).

Only where every weight is whole on its rank when the backward pass runs (ddp, zero1,
zero2, mp: mgft.spec.rules.lora_dropout, which `mgft plan` counts by too): FSDP and ZeRO-3
gather lora_A's weight around its module's forward, which a recomputation inside the
backward pass would not trigger. Elsewhere the dropout stays as peft built it, and
metrics.json's record says so.
"""

from __future__ import annotations

from typing import Any

import torch
from mgft.spec.job import Strategy
from mgft.spec.rules.lora_dropout import RECOMPUTED_UNDER
from torch.utils.checkpoint import checkpoint


def _generator(device: torch.device) -> torch.Generator | None:
    """The generator F.dropout draws from on this device (None: not one handled here)."""
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index]
    return None


class _DroppedLinear(torch.autograd.Function):
    """linear(dropout(x, p), weight, bias), keeping x and the generator's state for the
    backward pass instead of the dropout's output and mask."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                p: float, generator: torch.Generator) -> torch.Tensor:
        ctx.state, ctx.p, ctx.generator = generator.get_state(), p, generator
        ctx.save_for_backward(x, weight, bias)
        return torch.nn.functional.linear(torch.nn.functional.dropout(x, p, True), weight, bias)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        now = ctx.generator.get_state()
        ctx.generator.set_state(ctx.state)  # the forward pass's mask again
        try:
            with torch.enable_grad():
                leaves = [None if t is None else t.detach().requires_grad_(need)
                          for t, need in zip(saved, ctx.needs_input_grad[:3], strict=True)]
                x, weight, bias = leaves
                y = torch.nn.functional.linear(torch.nn.functional.dropout(x, ctx.p, True),
                                               weight, bias)
        finally:
            ctx.generator.set_state(now)
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(y, wanted, dy) if wanted else ())
        return (*(next(grads) if t is not None and t.requires_grad else None
                  for t in leaves), None, None)


class RecomputedDropoutLinear(torch.nn.Linear):
    """lora_A with its dropout folded in. The same parameters, under the same names, as the
    nn.Linear it was (its class is swapped in place), so adapters save and load as before."""

    p: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return torch.nn.functional.linear(x, self.weight, self.bias)  # dropout: identity
        generator = _generator(x.device)
        if generator is None or torch.is_autocast_enabled(x.device.type):
            # checkpoint replays autocast and forks any device's generator
            return checkpoint(self._dropped, x, use_reentrant=False, preserve_rng_state=True)
        return _DroppedLinear.apply(x, self.weight, self.bias, self.p, generator)

    def _dropped(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(torch.nn.functional.dropout(x, self.p, True),
                                          self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout p={self.p} recomputed in backward"


def _dropouts(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """(adapted layer, adapter name) of every adapter whose dropout peft stores."""
    return [(module, name) for module in model.modules()
            if hasattr(module, "lora_A") and hasattr(module, "lora_dropout")
            for name, dropout in module.lora_dropout.items()
            if type(dropout) is torch.nn.Dropout and dropout.p > 0
            and type(module.lora_A[name]) is torch.nn.Linear]


def fold(model: torch.nn.Module, strategy: Strategy) -> int:
    """Fold each adapter's dropout into its lora_A where the strategy allows; returns how
    many were folded."""
    pairs = _dropouts(model) if strategy in RECOMPUTED_UNDER else []
    for module, name in pairs:
        lora_a = module.lora_A[name]
        lora_a.__class__ = RecomputedDropoutLinear
        lora_a.p = module.lora_dropout[name].p
        module.lora_dropout[name] = torch.nn.Identity()
    return len(pairs)


def applied(model: torch.nn.Module) -> list[str]:
    """metrics.json's record: adapters whose dropout is recomputed, and those whose dropout
    output is stored (under FSDP and ZeRO-3)."""
    folded = sum(isinstance(m, RecomputedDropoutLinear) for m in model.modules())
    stored = len(_dropouts(model))
    return ([f"lora-dropout:recomputed:{folded}-adapters"] if folded else []) + (
        [f"lora-dropout:stored:{stored}-adapters"] if stored else [])
