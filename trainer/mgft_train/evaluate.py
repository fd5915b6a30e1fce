"""The trained model's loss on a fixed set (the first rows of the dataset), recorded in
metrics.json so a reloaded adapter or merged model can be checked against it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mgft_train.data import collate, label_tokens
from mgft_train.loop import loss_sum

EVAL_ROWS = 16


def eval_batches(examples: Sequence[Any], pad_id: int, rows: int) -> list[dict[str, torch.Tensor]]:
    """The first EVAL_ROWS examples, `rows` (the micro-batch) at a time: all 16 in one pass
    would hold their logits at once, 21 GB at 1024 tokens over Llama-3's vocabulary, and
    could run out of memory after training has finished."""
    first = list(examples[:EVAL_ROWS])
    return [collate(first[i:i + rows], pad_id=pad_id) for i in range(0, len(first), rows)]


def eval_loss(engine: Any, batches: Sequence[dict[str, torch.Tensor]],
              device: torch.device) -> float:
    """Collective: every rank runs the same batches (FSDP and ZeRO-3 gather weights to run)."""
    engine.train(False)  # no dropout
    summed = 0.0
    with torch.no_grad(), engine.computing():
        for batch in batches:
            summed += loss_sum(engine.model, {k: v.to(device) for k, v in batch.items()}).item()
    engine.train(True)
    return summed / max(sum(label_tokens(b) for b in batches), 1)
