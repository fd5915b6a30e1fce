"""Expand a Slurm host list (`gpu[01-03,07],a[1-2]-ib,b3`) without scontrol.

Many containers lack scontrol, yet every node must agree on the rendezvous host: the first
host of SLURM_JOB_NODELIST. The rules follow Slurm's hostlist.c: lists are comma-separated
outside brackets; a bracket holds comma-separated numbers or `lo-hi` ranges; a range is
zero-padded to the width of `lo` (`[08-10]` gives 08 09 10, `[1-010]` gives 1 ... 10); several
brackets in one name give every combination, in order.

    python -m mgft.node.nodelist 'gpu[01-03,07]'          one host per line
    python -m mgft.node.nodelist --first "$SLURM_JOB_NODELIST"
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence

MAX_HOSTS = 65536  # Slurm's own limit per range; stops `n[0-999999999]` eating memory


def _split_top(text: str) -> list[str]:
    """Split at commas that are not inside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested '[' at position {i} in {text!r}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"']' without '[' at position {i} in {text!r}")
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"'[' without ']' in {text!r}")
    items.append(text[start:])
    return items


def _expand_range(body: str, host: str) -> list[str]:
    out: list[str] = []
    for part in body.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad range {part!r} in {host!r}: use numbers like 1-4 or 01-04")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"range {part!r} in {host!r} runs backwards")
        if last - first >= MAX_HOSTS:
            raise ValueError(f"range {part!r} in {host!r} has more than {MAX_HOSTS} hosts")
        out += [str(n).zfill(len(lo)) for n in range(first, last + 1)]
    return out


def _expand_host(host: str) -> list[str]:
    pieces: list[list[str]] = []
    rest = host
    while "[" in rest:
        before, _, after = rest.partition("[")
        body, _, rest = after.partition("]")
        pieces += [[before], _expand_range(body, host)]
    pieces.append([rest])
    return ["".join(combo) for combo in itertools.product(*pieces)]


def expand(nodelist: str) -> list[str]:
    """Every host name in the list, in Slurm's order (duplicates kept, as scontrol does)."""
    hosts: list[str] = []
    for item in _split_top(nodelist.strip()):
        item = item.strip()
        if not item:
            continue
        hosts += _expand_host(item)
        if len(hosts) > MAX_HOSTS:
            raise ValueError(f"{nodelist[:60]!r}... names more than {MAX_HOSTS} hosts")
    if not hosts:
        raise ValueError("empty node list")
    return hosts


def first(nodelist: str) -> str:
    """The allocation's first node: where the rendezvous store runs."""
    return expand(nodelist)[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    only_first = "--first" in args
    args = [a for a in args if a != "--first"]
    if len(args) != 1:
        print("usage: python -m mgft.node.nodelist [--first] NODELIST", file=sys.stderr)
        return 2
    try:
        hosts = expand(args[0])
    except ValueError as err:
        print(f"mgft.node.nodelist: {err}", file=sys.stderr)
        return 2
    print("\n".join(hosts[:1] if only_first else hosts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
