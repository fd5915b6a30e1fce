"""Two losses measured without training: the held-out eval and the reload check.

- The eval loss is measured on held-out samples (--eval-dataset, or the rows --eval-split
  keeps out of training), every --eval-every steps and at the end. Its micro-batches are
  built as training builds them (packed into --seq-len sequences when training packs), so
  they take the same attention path and fit the same memory.
- The reload check loss is measured once, after training, on the first RELOAD_CHECK_ROWS
  samples trained on: the trained model's own loss on a fixed set, recorded so that a
  reloaded adapter or merged model can be checked against it. It is no evaluation.

Both are means per predicted token, over all the samples, whatever the batch boundaries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from mgft.spec.job import TrainSpec

from mgft_train import distributed
from mgft_train.data import EvalSet, Example, collate, label_tokens
from mgft_train.data.packing import EVAL_PACK_SEED, Pack, collate_packed, pack
from mgft_train.distributed import Dist
from mgft_train.loop import loss_sum

Batch = dict[str, torch.Tensor]
RELOAD_CHECK_ROWS = 16


class Chunks(Sequence[Batch]):
    """Items `size` at a time, collated when read: a large eval set is not kept as tensors."""

    def __init__(self, items: Sequence[Any], size: int,
                 collate_fn: Callable[[Sequence[Any]], Batch]) -> None:
        self._items, self._size, self._collate = list(items), size, collate_fn

    def __len__(self) -> int:
        return -(-len(self._items) // self._size)

    def __getitem__(self, i):  # type: ignore[override]  # ints only
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._collate(self._items[i * self._size:(i + 1) * self._size])


def eval_batches(examples: Sequence[Example], *, micro_batch: int, pad_id: int,
                 pack_len: int | None = None, flat: bool = False,
                 packs: Sequence[Pack] | None = None) -> Chunks:
    """The eval set in a fixed order, the same on every rank: `micro_batch` packs of up to
    `pack_len` tokens (as training packs them), or `micro_batch` padded samples. `packs`:
    those packs, made already (the data cache's)."""
    if pack_len is None:
        return Chunks(examples, micro_batch, partial(collate, pad_id=pad_id))
    if packs is None:
        packs = pack(examples, pack_len, seed=EVAL_PACK_SEED)
    return Chunks(packs, micro_batch, partial(collate_packed, pad_id=pad_id, flat=flat))


def held_out(engine: Any, eval_set: EvalSet | None, spec: TrainSpec, ctx: Dist, *,
             pad_id: int, flat: bool) -> Callable[[], float] | None:
    """The held-out loss of the engine's model as it is when called, or None without an
    eval set."""
    if eval_set is None:
        return None
    batches = eval_batches(eval_set.examples, micro_batch=spec.micro_batch, pad_id=pad_id,
                           pack_len=spec.seq_len if spec.packing else None, flat=flat,
                           packs=eval_set.packs)
    return partial(loss, engine, batches, ctx)


def reload_check_batches(examples: Sequence[Example], pad_id: int, rows: int) -> Chunks:
    """The first RELOAD_CHECK_ROWS samples trained on, `rows` (the micro-batch) at a time:
    all 16 in one pass would hold their logits at once, 21 GB at 1024 tokens over Llama-3's
    vocabulary, and could run out of memory after training has finished."""
    return Chunks(examples[:RELOAD_CHECK_ROWS], rows, partial(collate, pad_id=pad_id))


def loss(engine: Any, batches: Sequence[Batch], ctx: Dist) -> float:
    """Mean loss per predicted token over `batches`, the model in eval mode (no dropout).

    Collective: each rank runs every world_size-th batch, and the summed losses and token
    counts are all-reduced. FSDP and ZeRO-3 gather weights in each forward, so every rank
    runs the same number: one left without a batch in the last round runs the first batch
    again and drops its result.
    """
    mine = list(range(ctx.rank, len(batches), ctx.world_size))
    rounds = -(-len(batches) // ctx.world_size)
    summed, tokens = 0.0, 0
    engine.train(False)
    with torch.no_grad(), engine.computing():
        for i in range(rounds):
            batch = batches[mine[i] if i < len(mine) else 0]
            value = loss_sum(engine.model, {k: v.to(ctx.device) for k, v in batch.items()})
            if i < len(mine):
                summed += value.item()
                tokens += label_tokens(batch)
    engine.train(True)
    summed, tokens = distributed.all_reduce([summed, float(tokens)], ctx)
    return summed / max(tokens, 1.0)

