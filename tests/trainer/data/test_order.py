"""The epoch order: DistributedSampler's for a fresh run, and a prefix-exact continuation on
any number of ranks for a resumed one."""

from __future__ import annotations

import collections

import pytest
from mgft_train.data.order import EpochOrder, Position, Stream
from torch.utils.data import DataLoader, DistributedSampler


@pytest.mark.parametrize("size,world", [(10, 1), (10, 2), (11, 3), (7, 4), (2, 4)])
def test_a_fresh_epoch_is_dealt_as_distributed_sampler_deals_it(size, world):
    for epoch in (0, 3):
        for rank in range(world):
            theirs = DistributedSampler(range(size), num_replicas=world, rank=rank, seed=5)
            ours = EpochOrder(size, rank=rank, world_size=world, seed=5)
            theirs.set_epoch(epoch)
            ours.set_epoch(epoch)
            assert list(ours) == list(theirs) and len(ours) == len(theirs)


def loaders(size: int, world: int, micro: int) -> list[DataLoader]:
    return [DataLoader(range(size), batch_size=micro,
                       sampler=EpochOrder(size, rank=r, world_size=world, seed=0))
            for r in range(world)]


def test_items_consumed_on_two_ranks_are_continued_on_three_without_repeat_or_gap():
    first = [Stream(loader, Position()) for loader in loaders(24, 2, 3)]
    seen = [int(i) for stream in first for _ in range(2) for i in next(stream)]
    assert len(seen) == 12 and first[0].position == Position(epoch=0, items=12)
    rest = [Stream(loader, first[0].position) for loader in loaders(24, 3, 2)]
    # 12 items left, 3 ranks x 2 per micro-batch: two micro-batches each end the epoch.
    seen += [int(i) for stream in rest for _ in range(2) for i in next(stream)]
    assert collections.Counter(seen) == collections.Counter(range(24))
    assert rest[0].position == Position(epoch=1, items=0)
    # The next epoch is the full epoch-1 order, as a fresh three-rank run deals it.
    fresh = loaders(24, 3, 2)
    for stream, loader in zip(rest, fresh, strict=True):
        loader.sampler.set_epoch(1)
        assert next(stream).tolist() == next(iter(loader)).tolist()


def test_a_remainder_that_does_not_divide_is_padded_from_its_own_start():
    """10 items, 4 consumed, 6 left on 4 ranks: two of the 6 are dealt twice, none of the 4."""
    ranks = [EpochOrder(10, rank=r, world_size=4, seed=0) for r in range(4)]
    for sampler in ranks:
        sampler.set_epoch(0, start=4)
    dealt = collections.Counter(i for sampler in ranks for i in sampler)
    order = ranks[0].order()
    assert set(dealt) == set(order[4:])
    assert sorted(dealt.values()) == [1, 1, 1, 1, 2, 2]
    assert {len(s) for s in ranks} == {2}


def test_a_position_from_a_step_count_is_the_items_those_steps_drew():
    streams = [Stream(loader, Position()) for loader in loaders(10, 2, 2)]
    for _ in range(4):  # 4 micro-batches per rank: 2 + 2 + 1 items, then 2 of epoch 1
        for stream in streams:
            next(stream)
    assert streams[0].position == Position(epoch=1, items=4)
    assert Position.after_micro_batches(4, size=10, micro_batch=2, world_size=2) == \
        Position(epoch=1, items=4)
