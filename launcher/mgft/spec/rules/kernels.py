"""The --kernels fp8 rule, one for the launcher (`mgft.spec.validate`) and for the trainer
(`mgft_train.checks`), which may be started by hand. Pure: no I/O, no torch.

FP8 base weights (mgft_train.fp8) exist only for a frozen bf16 base held whole on each GPU:
the quantized copies are built once per process and are no parameter that a sharding or
casting wrapper (FSDP, DeepSpeed's bf16 engine) would know to handle."""

from __future__ import annotations

from typing import Any

from mgft.spec.job import Kernels, Strategy, TrainSpec, Tuning


def fp8_problem(train: TrainSpec) -> tuple[str, Any, str, str] | None:
    """(flag, value, problem, fix) for a --kernels fp8 job that cannot run as asked, or None.
    The flag is the CLI's (--kernels, --save-merged); the launcher maps it to its field."""
    if train.kernels is not Kernels.FP8:
        return None
    if train.tuning is not Tuning.LORA:
        return ("--kernels", "fp8", f"FP8 base weights are for --tuning lora (a frozen bf16 "
                f"base); --tuning {train.tuning.value} has none",
                "use --kernels auto, or --tuning lora")
    if train.strategy is not Strategy.DDP:
        return ("--kernels", "fp8", f"FP8 base weights run under --strategy ddp only; "
                f"{train.strategy.value} shards or recasts the base weights",
                "use --strategy ddp (LoRA's base fits each GPU), or --kernels auto")
    if train.save_merged:
        return ("--save-merged", True, "with --kernels fp8 the bf16 base weights are freed "
                "once quantized, so there is nothing to merge into",
                "drop --save-merged, or merge the saved adapter into the bf16 model afterwards")
    return None
