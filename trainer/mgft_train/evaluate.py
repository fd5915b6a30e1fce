"""The trained model's loss on a fixed batch (the first rows of the dataset), recorded in
metrics.json so a reloaded adapter or merged model can be checked against it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mgft_train.data import collate, label_tokens
from mgft_train.loop import loss_sum

EVAL_ROWS = 16


def eval_batch(examples: Sequence[Any], pad_id: int) -> dict[str, torch.Tensor]:
    return collate(examples[:EVAL_ROWS], pad_id=pad_id)


def eval_loss(engine: Any, batch: dict[str, torch.Tensor], device: torch.device) -> float:
    """Collective: every rank runs the same batch (FSDP and ZeRO-3 gather weights to run)."""
    engine.train(False)  # no dropout
    with torch.no_grad():
        summed = loss_sum(engine.model, {k: v.to(device) for k, v in batch.items()})
    engine.train(True)
    return summed.item() / max(label_tokens(batch), 1)
