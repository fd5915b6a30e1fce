"""Examples → micro-batches, sharded over ranks; and what the loop reads from a batch.

A batch holds input_ids and labels, plus either attention_mask (padded, one sample per row)
or position_ids and token_mask (packed: see packing.py). The model must get exactly
`model_inputs(batch)`: passing a packed batch's token_mask as attention_mask would let packed
samples attend to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader

from mgft_train.data.encode import IGNORE, Example
from mgft_train.data.order import EpochOrder
from mgft_train.data.packing import Pack, collate_packed, pack

Batch = dict[str, torch.Tensor]
MODEL_KEYS = ("input_ids", "attention_mask", "position_ids")


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    """Right-pad to the longest example in this batch (not to seq_len: padding is wasted work)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def model_inputs(batch: Batch) -> dict[str, Any]:
    # use_cache=False: with a KV cache transformers skips its packed-sequence check.
    inputs = {k: batch[k] for k in MODEL_KEYS if k in batch} | {"use_cache": False}
    if "cu_seq_lens" in batch:  # a flat packed row: transformers' names for varlen kernels
        cu = batch["cu_seq_lens"]
        longest = int((cu[1:] - cu[:-1]).max())
        inputs |= {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
                   "max_length_q": longest, "max_length_k": longest}
    return inputs


def real_tokens(batch: Batch) -> int:
    """Tokens that are not padding."""
    return int(batch["attention_mask" if "attention_mask" in batch else "token_mask"].sum())


def label_tokens(batch: Batch) -> int:
    """Tokens that are predicted: position t predicts labels[t + 1], so the first never counts."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def make_loader(examples: Sequence[Example], *, micro_batch: int, pad_id: int, rank: int,
                world_size: int, seed: int, pin_memory: bool = False,
                pack_len: int | None = None, flat: bool = False,
                packs: Sequence[Pack] | None = None) -> DataLoader:
    """Each rank sees its own 1/world_size of the data, reshuffled every epoch (set_epoch).

    With pack_len, the items are packs of up to pack_len tokens, and a micro-batch is
    micro_batch packs: `packs` if given (`pack(examples, pack_len, seed)` made once, by the
    data cache), else packed here. The order (data/order.py) pads with repeated items so
    every rank has the same number of batches; unequal counts would leave one rank waiting
    forever in an all-reduce.
    """
    items: Sequence[Any]
    if pack_len is None:
        items, collate_fn = examples, partial(collate, pad_id=pad_id)
    else:
        items = pack(examples, pack_len, seed) if packs is None else packs
        collate_fn = partial(collate_packed, pad_id=pad_id, flat=flat)
    sampler = EpochOrder(len(items), rank=rank, world_size=world_size, seed=seed)
    return DataLoader(items, batch_size=micro_batch, sampler=sampler, collate_fn=collate_fn,
                      pin_memory=pin_memory)
