"""The order items are trained in, and where in it a run stands, whatever its number of ranks.

Each epoch's order is a permutation of the items drawn from (--seed, epoch) alone: the one
torch's DistributedSampler draws, so a run that never resumes trains on exactly what it did
before this module existed. Global position p of an epoch goes to rank p % world, so every
micro-batch of every rank together covers a contiguous run of positions, and after any number
of steps a run has consumed a prefix of the epoch: its `Position` is (epoch, items consumed),
independent of how many ranks consumed them. A run resumed on another number of ranks (or
with another --micro-batch or --grad-accum) deals the rest of that permutation out to its own
ranks: within the epoch no item is repeated or skipped.

When the items left in an epoch do not divide by the number of ranks, the first few of them
are dealt again to fill the last round (as DistributedSampler pads every epoch): every rank
must run as many micro-batches, or one would wait forever in an all-reduce.

MGFT_SAMPLE_LOG=DIR (tests and debugging only) makes each rank append the items it draws,
one "epoch item" line each, to DIR/samples-rankNNNNN.txt.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

SAMPLE_LOG = "MGFT_SAMPLE_LOG"


@dataclass(frozen=True, kw_only=True, slots=True)
class Position:
    """Items of `epoch`'s order consumed so far, by all ranks together."""

    epoch: int = 0
    items: int = 0

    @classmethod
    def after_micro_batches(cls, count: int, *, size: int, micro_batch: int,
                            world_size: int) -> Position:
        """Where `count` micro-batches per rank from the start of epoch 0 end: how a
        checkpoint that recorded only its step count (older ones) is placed."""
        per_epoch = math.ceil(math.ceil(size / world_size) / micro_batch)
        epoch, offset = divmod(count, per_epoch)
        return cls(epoch=epoch, items=offset * micro_batch * world_size)


class EpochOrder(Sampler[int]):
    """This rank's share of each epoch's order, from `set_epoch(epoch, start)` on."""

    def __init__(self, size: int, *, rank: int, world_size: int, seed: int) -> None:
        self.size, self.rank, self.world_size, self.seed = size, rank, world_size, seed
        self.epoch, self.start = 0, 0
        log = os.environ.get(SAMPLE_LOG)
        self.log = Path(log) / f"samples-rank{rank:05d}.txt" if log else None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start < self.size:
            raise ValueError(f"start {start} is outside an epoch of {self.size} items")
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def dealt(self) -> list[int]:
        """Every rank's items of this epoch from `start`, padded to a whole round."""
        rest = self.order()[self.start:]
        rounds = math.ceil(len(rest) / self.world_size)
        return list(itertools.islice(itertools.cycle(rest), rounds * self.world_size))

    def __iter__(self) -> Iterator[int]:
        mine = self.dealt()[self.rank::self.world_size]
        if self.log is None:
            return iter(mine)
        return self._logged(mine)

    def _logged(self, mine: list[int]) -> Iterator[int]:
        for item in mine:  # drawn lazily: a line per item actually batched
            with self.log.open("a", encoding="utf-8") as out:
                out.write(f"{self.epoch} {item}\n")
            yield item

    def __len__(self) -> int:
        return math.ceil((self.size - self.start) / self.world_size)


class Stream:
    """Endless micro-batches across epochs from `start`; `position` is where the last one
    drawn ends.

    Creating a DataLoader iterator draws a seed from the global RNG; fork_rng keeps that draw
    out of it, so dropout masks do not depend on where in an epoch a run started.
    """

    def __init__(self, loader: DataLoader, start: Position) -> None:
        self.position = start
        self._batches = self._stream(loader, start)

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        batch, self.position = next(self._batches)
        return batch

    @staticmethod
    def _stream(loader: DataLoader, start: Position) -> Iterator[tuple[Any, Position]]:
        sampler: EpochOrder = loader.sampler
        micro = loader.batch_size
        epoch, first = start.epoch, start.items
        if first >= sampler.size:
            epoch, first = epoch + 1, 0
        while True:
            sampler.set_epoch(epoch, first)
            share = len(sampler)
            with torch.random.fork_rng(devices=[]):
                batches = iter(loader)
            for count, batch in enumerate(batches, start=1):
                done = first + min(count * micro, share) * sampler.world_size
                yield batch, (Position(epoch=epoch, items=done) if done < sampler.size
                              else Position(epoch=epoch + 1))
            epoch, first = epoch + 1, 0
