"""Dataset file types, and JSON / JSON Lines files → raw rows, each named by file and line.

Torch-free on purpose: `mgft_train.data` (which imports torch) reads every row with it, and
`check_head` reads only the first rows, for the trainer's input checks and for the launcher,
which runs them before torchrun starts (`mgft.backends.local.inputs`).
"""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgft_train.errors import UsageError

KINDS = ".jsonl, .json or .parquet file, or a directory written by datasets' save_to_disk"
SUFFIXES = (".jsonl", ".json", ".parquet")
JSON_FIX = "each row must be one JSON object (one per line in .jsonl; an array of them in .json)"
HEAD_ROWS = 100  # what check_head parses: a bad first row is found in milliseconds
HEAD_BYTES = 32 << 20  # of a .json file; its first rows are far inside this


@dataclass(frozen=True, slots=True)
class RawRow:
    where: str  # "data.jsonl:12" or "data.parquet row 12": how errors name the row
    fields: dict[str, Any]


def suffix_of(dataset: str, flag: str = "--dataset") -> str:
    """The file's type, from its suffix; anything but SUFFIXES is refused."""
    suffix = Path(dataset).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(flag, dataset, f"unknown file type {suffix or '(no suffix)'!r}",
                         f"pass a {KINDS}")
    return suffix


def no_rows(dataset: str, flag: str = "--dataset") -> UsageError:
    return UsageError(flag, dataset, "holds no rows",
                      "check the path, or that the file was written completely")


def jsonl_rows(path: Path, text: str | None = None, flag: str = "--dataset"
               ) -> Iterator[RawRow]:
    lines = (text if text is not None else read_text(path, flag)).splitlines()
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            where = f"{path}:{lineno}"
            yield RawRow(where, _object(_loads(line, where, flag), where, line, flag))


def json_rows(path: Path, text: str | None = None, flag: str = "--dataset", *,
              cut: bool = False) -> Iterator[RawRow]:
    """`cut`: `text` is the file's head, cut at a line end; an item that the cut leaves
    unfinished ends the rows instead of failing (the parser stops at the very end of the
    text, which JSON allows mid-item only at a line break)."""
    text = text if text is not None else read_text(path, flag)
    start = len(text) - len(text.lstrip())
    if text[start:start + 1] != "[":
        yield from jsonl_rows(path, text, flag)  # JSON Lines as .json: datasets reads it too
        return
    decoder = json.JSONDecoder()
    pos, line, counted = start + 1, 1, 0
    while True:
        pos = _skip_space(text, pos)
        if text[pos:pos + 1] == "]":
            return
        line += text.count("\n", counted, pos)
        counted = pos
        where = f"{path}:{line}"
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            if cut and err.pos >= len(text.rstrip()):
                return
            raise UsageError(flag, f"{path}:{err.lineno}", f"invalid JSON: {err.msg}",
                             JSON_FIX) from None
        yield RawRow(where, _object(obj, where, flag=flag))
        pos = _skip_space(text, end)
        if text[pos:pos + 1] == ",":
            pos += 1
        elif text[pos:pos + 1] != "]":
            if cut and pos >= len(text):
                return
            line += text.count("\n", counted, pos)
            raise UsageError(flag, f"{path}:{line}",
                             "invalid JSON: expected ',' or ']' after an array item", JSON_FIX)


def read_text(path: Path, flag: str = "--dataset") -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err, 0, flag) from None


def check_head(dataset: str, flag: str = "--dataset", rows: int = HEAD_ROWS) -> None:
    """What can be found wrong with a dataset without reading it all: its type, an empty
    file, and invalid JSON or a non-object in its first `rows` rows. A save_to_disk directory
    and parquet need `datasets` to look inside: they are read in full by `data.files`."""
    path = Path(dataset)
    if path.is_dir():
        return
    suffix = suffix_of(dataset, flag)
    if path.stat().st_size == 0:
        raise no_rows(dataset, flag)
    if suffix == ".parquet":
        return
    found = (_jsonl_head if suffix == ".jsonl" else _json_head)(path, rows, flag)
    if found == 0:
        raise no_rows(dataset, flag)


def _jsonl_head(path: Path, rows: int, flag: str) -> int:
    """Line by line, so a large file costs only its first rows."""
    found = lineno = offset = 0
    with path.open("rb") as f:
        for raw in f:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(path, err, offset, flag) from None
            offset += len(raw)
            for line in text.splitlines():  # as jsonl_rows splits, so line numbers agree
                lineno += 1
                if line.strip():
                    where = f"{path}:{lineno}"
                    _object(_loads(line, where, flag), where, line, flag)
                    found += 1
            if found >= rows:
                break
    return found


def _json_head(path: Path, rows: int, flag: str) -> int:
    with path.open("rb") as f:
        data = f.read(HEAD_BYTES + 1)
    whole = len(data) <= HEAD_BYTES
    try:  # a cut multi-byte character at the end of the head is left out, not an error
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:HEAD_BYTES], final=whole)
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err, 0, flag) from None
    if whole:
        return sum(1 for _ in itertools.islice(json_rows(path, text, flag), rows))
    text = text[:text.rfind("\n") + 1]  # whole lines only
    found = sum(1 for _ in itertools.islice(json_rows(path, text, flag, cut=True), rows))
    return max(found, 1)  # a first row longer than the head: the file is not empty


def _not_utf8(path: Path, err: UnicodeDecodeError, offset: int, flag: str) -> UsageError:
    return UsageError(flag, path, f"not UTF-8 text ({err.reason} at byte "
                      f"{offset + err.start})", "save the file as UTF-8")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _loads(line: str, where: str, flag: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise UsageError(flag, where, f"invalid JSON: {err.msg}{_array_hint(line)}",
                         JSON_FIX) from None


def _object(obj: Any, where: str, line: str = "", flag: str = "--dataset") -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise UsageError(flag, where, f"row is a JSON {type(obj).__name__}, not an "
                         f"object{_array_hint(line)}", JSON_FIX)
    return obj


def _array_hint(line: str) -> str:
    # Alpaca's own release is one .json array; saved as .jsonl it fails at line 1.
    if line.lstrip()[:1] == "[":
        return " (a .json array? name the file .json or write one object per line)"
    return ""
