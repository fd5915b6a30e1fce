"""Where generations live on disk, so that a crashed run resumes without redoing anything.

    <output>/shards/settings.json        what the generations were made with
    <output>/shards/rank-00003.jsonl     rank 3's results, appended and fsynced batch by batch
    <output>/generations.jsonl           every prompt's result in input order (written last)
    <output>/generation_metrics.json     timings of the latest run, and of the runs before it

A crash can tear at most the last line of a shard; readers skip it and its writer cuts it off
before appending. A result is done once its line is complete, whichever rank or run wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mgft_train.errors import UsageError
from mgft_train.generate.prompts import Prompt

RESULT = "generations.jsonl"
METRICS = "generation_metrics.json"
SHARDS = "shards"
SETTINGS = "settings.json"
# What a result line holds besides its index (the merged file adds the input row and prompt).
FIELDS = ("completion", "finish_reason", "prompt_tokens", "completion_tokens")


def shard_path(output: str | Path, rank: int) -> Path:
    return Path(output, SHARDS, f"rank-{rank:05d}.jsonl")


def _complete_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return data.split(b"\n")[:-1]  # whatever follows the last newline is a torn write


def read_done(output: str | Path) -> dict[int, dict[str, Any]]:
    """Every complete result in every shard, by prompt index (from any earlier world size)."""
    done: dict[int, dict[str, Any]] = {}
    for path in sorted(Path(output, SHARDS).glob("rank-*.jsonl")):
        for line in _complete_lines(path):
            try:
                record = json.loads(line)
                index = int(record["index"])
                if all(k in record for k in FIELDS):
                    done.setdefault(index, record)
            except (ValueError, KeyError, TypeError):
                continue  # not a result line; generation redoes that prompt
    return done


def cut_torn_tail(path: Path) -> None:
    """Drop a partial last line left by a crash, so the next append starts a fresh line."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


class ShardWriter:
    """Append-only results of one rank; each batch is on disk before the next one starts."""

    def __init__(self, output: str | Path, rank: int) -> None:
        self.path = shard_path(output, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cut_torn_tail(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_settings(output: str | Path, settings: dict[str, Any]) -> None:
    """Resuming with other settings would mix two kinds of results in one file: refuse."""
    path = Path(output, SHARDS, SETTINGS)
    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    changed = [k for k in settings if before.get(k) != settings[k]]
    if changed:
        what = ", ".join(f"{k} {before.get(k)!r} then, {settings[k]!r} now" for k in changed)
        raise UsageError("--output", output, f"holds generations made with other settings "
                         f"({what})", "use a new --output, or rerun with the same settings "
                         "to resume")


def write_json(path: Path, data: Any) -> None:
    """Atomically: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_metrics(output: str | Path, report: dict[str, Any]) -> None:
    """The latest run's figures at the top; those of the runs it resumed are kept under
    "earlier_runs", oldest first."""
    path = Path(output, METRICS)
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        earlier = before.pop("earlier_runs", [])
        report = report | {"earlier_runs": [*earlier, before]}
    write_json(path, report)


def write_settings(output: str | Path, settings: dict[str, Any]) -> None:
    path = Path(output, SHARDS, SETTINGS)
    if not path.is_file():
        write_json(path, settings)


def merge(output: str | Path, prompts: list[Prompt]) -> Path:
    """generations.jsonl: one line per prompt, in input order, from whatever the shards hold."""
    done = read_done(output)
    missing = [p.index for p in prompts if p.index not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} prompts have no result after every rank finished "
                           f"(first: index {missing[0]}); rerun with the same --output")
    final = Path(output, RESULT)
    tmp = final.with_name(f".{final.name}.partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for p in prompts:
            record = done[p.index]
            line = {"index": p.index, "input": p.row, "prompt": p.text,
                    **{k: record[k] for k in FIELDS}}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final
