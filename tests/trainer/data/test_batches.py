from __future__ import annotations

import math

import torch
from mgft_train.data import (
    IGNORE,
    Example,
    collate,
    label_tokens,
    make_loader,
    model_inputs,
    real_tokens,
)


def test_collate_right_pads_to_the_batch_longest_and_counts_real_tokens():
    examples = [Example(input_ids=[5, 6, 7], labels=[IGNORE, 6, 7]),
                Example(input_ids=[5, 6, 7, 8, 9], labels=[IGNORE, IGNORE, 7, 8, 9])]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, IGNORE], [IGNORE, IGNORE, 7, 8, 9]]
    assert batch["input_ids"].dtype == torch.long
    assert real_tokens(batch) == 8
    assert label_tokens(batch) == 5
    assert set(model_inputs(batch)) == {"input_ids", "attention_mask", "use_cache"}


def ids_seen(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch["input_ids"][:, 0]]


def test_loader_shards_ranks_disjointly_and_reshuffles_each_epoch():
    # The first token is the example's index, so each batch says which examples it holds.
    examples = [Example(input_ids=[i, 1], labels=[IGNORE, 1]) for i in range(40)]
    loaders = [make_loader(examples, micro_batch=4, pad_id=0, rank=r, world_size=2, seed=3)
               for r in (0, 1)]
    rank0, rank1 = ids_seen(loaders[0]), ids_seen(loaders[1])
    assert len(rank0) == len(rank1) == 20
    assert sorted(rank0 + rank1) == list(range(40))
    loaders[0].sampler.set_epoch(1)
    assert ids_seen(loaders[0]) != rank0
    again = make_loader(examples, micro_batch=4, pad_id=0, rank=0, world_size=2, seed=3)
    assert ids_seen(again) == rank0  # same seed, same epoch, same order


def test_packed_loader_shards_packs_and_every_sample_is_seen_once():
    examples = [Example(input_ids=[i] * (2 + i % 5), labels=[IGNORE] + [i] * (1 + i % 5))
                for i in range(40)]
    seen: list[int] = []
    batches = 0
    for rank in (0, 1):
        loader = make_loader(examples, micro_batch=2, pad_id=-1, rank=rank, world_size=2,
                             seed=0, pack_len=16)
        for batch in loader:
            batches += 1
            starts = batch["position_ids"] == 0
            seen += batch["input_ids"][starts & (batch["token_mask"] == 1)].tolist()
            assert batch["input_ids"].shape[1] <= 16
    packs = loader.dataset
    assert 10 <= len(packs) <= 11  # 160 tokens: 10 packs of 16 at best
    per_rank = math.ceil(len(packs) / 2)  # DistributedSampler evens ranks out with repeats
    assert batches == 2 * math.ceil(per_rank / 2)
    assert sorted(set(seen)) == list(range(40))
    repeated = 2 * per_rank - len(packs)
    assert len(seen) - 40 <= repeated * max(len(p) for p in packs)
