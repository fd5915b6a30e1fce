"""Where LoRA's dropout is recomputed in the backward pass rather than stored, one rule for
the trainer (`mgft_train.lora_dropout`, which does it) and the planner (`mgft.plan.memory`,
which counts no dropout copies there). Pure: no torch.

The recomputation runs lora_A's weight outside its module's forward, so only strategies
that keep every trained weight whole on each rank through the backward pass qualify: FSDP
and ZeRO-3 gather a weight around its own module's forward only."""

from __future__ import annotations

from mgft.spec.job import Strategy

RECOMPUTED_UNDER = frozenset({Strategy.DDP, Strategy.ZERO1, Strategy.ZERO2, Strategy.MP})
