"""Where LoRA's dropout is recomputed in the backward pass rather than stored
(--lora-dropout-recompute), one rule for the launcher (`mgft.spec.validate`), the trainer
(`mgft_train.lora_dropout`, which does it; `mgft_train.checks` for a trainer started by
hand) and the planner (`mgft.plan.memory`, which then counts no dropout copies). Pure: no
torch.

The recomputation runs lora_A's weight outside its module's forward, so only strategies
that keep every trained weight whole on each rank through the backward pass qualify: FSDP
and ZeRO-3 gather a weight around its own module's forward only.

It is a choice, not the default: it saves the dropout copies (about a fifth of an 8B LoRA
run's peak) but costs about a quarter of the tokens/s on an H100, whose host launches the
extra work more slowly than the GPU runs it (bench/PERF-NOTES.md §7)."""

from __future__ import annotations

from typing import Any

from mgft.spec.job import Strategy, TrainSpec, Tuning

RECOMPUTED_UNDER = frozenset({Strategy.DDP, Strategy.ZERO1, Strategy.ZERO2, Strategy.MP})


def asks_recompute(train: TrainSpec) -> bool:
    """--lora-dropout-recompute with something to recompute: a dropout, and adapters."""
    return (train.lora_dropout_recompute and train.lora_dropout > 0
            and train.tuning is not Tuning.FULL)


def recompute_problem(train: TrainSpec) -> tuple[str, Any, str, str] | None:
    """(flag, value, problem, fix) where --lora-dropout-recompute cannot run as asked (with
    no dropout, or no adapters, there is nothing to recompute anywhere)."""
    if not asks_recompute(train) or train.strategy in RECOMPUTED_UNDER:
        return None
    return ("--lora-dropout-recompute", True, f"--strategy {train.strategy.value} gathers "
            "each adapter weight around its own module's forward, which a recomputation in "
            "the backward pass would not trigger",
            "use --strategy ddp, zero1, zero2 or mp, or drop --lora-dropout-recompute")
