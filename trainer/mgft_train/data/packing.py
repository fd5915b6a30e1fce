"""Packing: several samples per --seq-len sequence, with attention kept inside each sample.

How the boundary is kept: each sample's position_ids restart at 0, and the model gets no
attention_mask. transformers (5.x) reads the restarts as sample boundaries:
- eager, sdpa and flex_attention build a block-diagonal causal mask from them, per row
  (masking_utils.find_packed_sequence_indices);
- flash_attention_2/3/4 call the varlen kernel with cu_seqlens taken from them, but only when
  the batch is one row (modeling_flash_attention_utils._is_packed_sequence). So for those,
  and for any implementation not known to mask per row (mgft's own varlen attention on
  GPUs, kernels.py), the micro-batch is flattened into a single row (`flat`) that also
  carries cu_seq_lens: correct everywhere, and the fastest layout for varlen kernels.
It also needs no KV cache in the forward pass: with one, the packing check is skipped and
samples see each other; `batches.model_inputs` passes use_cache=False.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect_left, insort
from collections.abc import Sequence
from typing import Any

import torch

from mgft_train.data.encode import IGNORE, Example

Pack = tuple[Example, ...]
# Attention implementations that turn restarting position_ids into a per-row block mask.
ROW_MASKED = frozenset({"eager", "sdpa", "flex_attention"})
# The eval set is packed the same way whatever --seed is: its loss is comparable across runs.
EVAL_PACK_SEED = 0


def pack(examples: Sequence[Example], capacity: int, seed: int) -> list[Pack]:
    """Best-fit decreasing: longest first, each into the fullest pack it still fits.

    Packs typically end up over 95% full. The seeded shuffle first only decides the order
    among samples of equal length. Every example must fit (encode truncates or drops).
    """
    packs = pack_indices([len(e.input_ids) for e in examples], capacity, seed)
    return [tuple(examples[i] for i in p) for p in packs]


def pack_indices(lengths: Sequence[int], capacity: int, seed: int) -> list[list[int]]:
    """`pack` on the examples' lengths: each pack as the indices of its examples (what the
    data cache stores)."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: -lengths[i])  # stable: ties stay shuffled
    packs: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (tokens still free, pack index), ascending
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example of {n} tokens exceeds the pack capacity {capacity}")
        k = bisect_left(room, (n, -1))
        if k < len(room):
            free, p = room.pop(k)
        else:
            free, p = capacity, len(packs)
            packs.append([])
        packs[p].append(i)
        if free - n > 0:
            insort(room, (free - n, p))
    return packs


def collate_packed(packs: Sequence[Pack], pad_id: int, flat: bool = False) -> dict[str, Any]:
    """One row per pack (or one row for all, `flat`), right-padded to the longest row.

    The padding is given positions 0, 1, ... of its own, so it reads as one more sample that
    nothing real attends to; its labels are IGNORE and `token_mask` leaves it out of counts.
    """
    rows = [[e for p in packs for e in p]] if flat else [list(p) for p in packs]
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    token_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.input_ids)
            input_ids[r, at:at + n] = torch.tensor(e.input_ids)
            labels[r, at:at + n] = torch.tensor(e.labels)
            position_ids[r, at:at + n] = torch.arange(n)
            token_mask[r, at:at + n] = 1
            at += n
        position_ids[r, at:] = torch.arange(width - at)
    batch = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels,
             "token_mask": token_mask}
    if flat:  # where each sample starts and ends, for varlen attention (kernels.py)
        lengths = [len(e.input_ids) for e in rows[0]]
        batch["cu_seq_lens"] = torch.tensor([0, *itertools.accumulate(lengths)],
                                            dtype=torch.int32)
    return batch


def flat_rows(model: torch.nn.Module) -> bool:
    """Whether packed micro-batches must be one row for this model's attention (see above)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) not in ROW_MASKED


def fill(packs: Sequence[Pack], capacity: int) -> float:
    """Share of the packs' --seq-len slots holding real tokens."""
    used = sum(len(e.input_ids) for p in packs for e in p)
    return used / (capacity * len(packs)) if packs else 0.0
