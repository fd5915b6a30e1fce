"""Reading a Slurm job's log files, whole or as they grow (`mgft logs JOB [-f]`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path


def read_lines(files: Iterable[Path]) -> Iterator[str]:
    for path in files:
        try:
            with path.open(errors="replace") as f:
                yield from f
        except FileNotFoundError:
            continue  # a node that never started writes none


class Follower:
    """Hands out each file's new complete lines on every read, file by file."""

    def __init__(self, files: Iterable[Path]) -> None:
        self.offsets = {Path(f): 0 for f in files}

    def read(self, final: bool = False) -> Iterator[str]:
        """New complete lines; with final=True also a last line that lacks its newline."""
        for path, offset in self.offsets.items():
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = len(data) if final else data.rfind(b"\n") + 1
            if end <= 0:
                continue
            self.offsets[path] = offset + end
            yield from data[:end].decode(errors="replace").splitlines(keepends=True)
