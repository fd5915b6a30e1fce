"""--eval-split: the rows of --dataset held out for evaluation, never trained on.

The rule depends on the number of rows and the seed only, never on their content: shuffle
the row numbers 0..n-1 with a generator seeded by --seed, and hold out the last
round(n x FRACTION) of that order (halves round up). The same file, fraction and seed hold
out the same rows on every rank and in a resumed run; another --seed holds out others.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

from mgft_train.errors import UsageError

T = TypeVar("T")
# Salts the shuffle, so that it is not the permutation packing draws from the same seed.
SALT = "mgft eval split"


def held_out(rows: int, fraction: float, seed: int) -> list[int]:
    """The held-out row numbers (0-based, ascending) of a file of `rows` rows."""
    count = math.floor(rows * fraction + 0.5)
    order = list(range(rows))
    random.Random(f"{SALT} {seed}").shuffle(order)
    return sorted(order[rows - count:])


def split(records: Sequence[T], fraction: float, seed: int,
          source: str) -> tuple[list[T], list[T]]:
    """(trained, held out), each in file order. A split that leaves either side empty is
    refused: an eval set of no rows measures nothing, and no rows left means no training."""
    n = len(records)
    held = set(held_out(n, fraction, seed))
    if not held:
        raise UsageError("--eval-split", fraction,
                         f"holds out no row: {source} has {n} rows, and {n} x {fraction} "
                         "rounds to 0", f"use 1/{n} or more, or --eval-dataset FILE")
    if len(held) == n:
        raise UsageError("--eval-split", fraction,
                         f"holds out all {n} rows of {source}, leaving none to train on",
                         f"use {n - 1}/{n} or less, or --eval-dataset FILE")
    trained = [r for i, r in enumerate(records) if i not in held]
    return trained, [r for i, r in enumerate(records) if i in held]
