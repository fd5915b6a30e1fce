"""Where --compile blocks runs, one rule for the launcher (`mgft.spec.validate`) and the
trainer (`mgft_train.checks`, for a trainer started by hand). Pure: no torch.

Proven (tests/trainer/test_compiled.py, every family against transformers' eager
arithmetic) and measured (bench/PERF-NOTES.md §7) under ddp only: FSDP and ZeRO-3 gather
weights around each module's forward through hooks, DeepSpeed wraps the model in its own
engine, and mp's device hooks move tensors between GPUs inside a block: each would need its
own proof before a compiled block may run under it. The LoRA dropout recomputation
(--lora-dropout-recompute) replays a saved random-generator state inside an
autograd.Function, which a compiled graph does not keep."""

from __future__ import annotations

from typing import Any

from mgft.spec.job import Compile, Strategy, TrainSpec
from mgft.spec.rules.lora_dropout import asks_recompute

COMPILED_UNDER = frozenset({Strategy.DDP})


def compile_problem(train: TrainSpec) -> tuple[str, Any, str, str] | None:
    """(flag, value, problem, fix) where --compile cannot run as asked."""
    if train.compile is Compile.NONE:
        return None
    if train.strategy not in COMPILED_UNDER:
        return ("--compile", train.compile.value, f"compiled blocks are proven under --strategy "
                f"ddp only, not {train.strategy.value}",
                "use --strategy ddp, or --compile none")
    if asks_recompute(train):
        return ("--compile", train.compile.value, "--lora-dropout-recompute replays a saved "
                "random state in the backward pass, which a compiled block does not keep",
                "drop --lora-dropout-recompute, or use --compile none")
    return None
