"""Dataset files → raw rows, each tagged with where a user finds it in the file.

.jsonl (one object per line), .json (an array of objects, or JSON Lines under a .json name),
.parquet, and directories written by `datasets`' save_to_disk. JSON is parsed here so an error
can name the line; parquet and saved datasets go through `datasets`, whose rows have no lines,
so they are named by row number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgft_train.errors import UsageError

KINDS = ".jsonl, .json or .parquet file, or a directory written by datasets' save_to_disk"
JSON_FIX = "each row must be one JSON object (one per line in .jsonl; an array of them in .json)"


@dataclass(frozen=True, slots=True)
class RawRow:
    where: str  # "data.jsonl:12" or "data.parquet row 12": how errors name the row
    fields: dict[str, Any]


def iter_rows(dataset: str) -> Iterator[RawRow]:
    path = Path(dataset)
    if path.is_dir():
        return _saved_rows(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path)
    if suffix == ".json":
        return _json_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise UsageError("--dataset", dataset, f"unknown file type {suffix or '(no suffix)'!r}",
                     f"pass a {KINDS}")


def _jsonl_rows(path: Path, text: str | None = None) -> Iterator[RawRow]:
    lines = (text if text is not None else _read_text(path)).splitlines()
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            yield RawRow(f"{path}:{lineno}", _object(_loads(line, f"{path}:{lineno}"),
                                                     f"{path}:{lineno}", line))


def _json_rows(path: Path) -> Iterator[RawRow]:
    text = _read_text(path)
    start = len(text) - len(text.lstrip())
    if text[start:start + 1] != "[":
        yield from _jsonl_rows(path, text)  # JSON Lines saved as .json: datasets reads it too
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
            raise UsageError("--dataset", f"{path}:{err.lineno}", f"invalid JSON: {err.msg}",
                             JSON_FIX) from None
        yield RawRow(where, _object(obj, where))
        pos = _skip_space(text, end)
        if text[pos:pos + 1] == ",":
            pos += 1
        elif text[pos:pos + 1] != "]":
            line += text.count("\n", counted, pos)
            raise UsageError("--dataset", f"{path}:{line}",
                             "invalid JSON: expected ',' or ']' after an array item", JSON_FIX)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UsageError("--dataset", path, f"not UTF-8 text ({err.reason} at byte {err.start})",
                         "save the file as UTF-8") from None


def _loads(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise UsageError("--dataset", where, f"invalid JSON: {err.msg}{_array_hint(line)}",
                         JSON_FIX) from None


def _object(obj: Any, where: str, line: str = "") -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise UsageError("--dataset", where, f"row is a JSON {type(obj).__name__}, not an "
                         f"object{_array_hint(line)}", JSON_FIX)
    return obj


def _array_hint(line: str) -> str:
    # Alpaca's own release is one .json array; saved as .jsonl it fails at line 1.
    if line.lstrip()[:1] == "[":
        return " (a .json array? name the file .json or write one object per line)"
    return ""


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    datasets = _quiet_datasets()
    # keep_in_memory: no arrow copy in the HF cache, which N ranks would race to write.
    table = _reading(path, "parquet", lambda: datasets.Dataset.from_parquet(
        str(path), keep_in_memory=True))
    return _arrow_rows(table, str(path))


def _saved_rows(path: Path) -> Iterator[RawRow]:
    datasets = _quiet_datasets()
    saved = _reading(path, "a save_to_disk directory", lambda: datasets.load_from_disk(str(path)))
    if isinstance(saved, datasets.DatasetDict):
        splits = sorted(saved)
        split = "train" if "train" in saved else (splits[0] if len(splits) == 1 else None)
        if split is None:
            raise UsageError("--dataset", path, f"holds splits {splits} and none is 'train'",
                             "save the split to train on by itself (ds[name].save_to_disk)")
        return _arrow_rows(saved[split], f"{path} (split {split})")
    return _arrow_rows(saved, str(path))


def _arrow_rows(table: Any, name: str) -> Iterator[RawRow]:
    for index, row in enumerate(table, start=1):
        # Arrow has no absent keys: a row without a column holds None there. Dropping them makes
        # "missing key" read the same as for JSON.
        yield RawRow(f"{name} row {index}", {k: v for k, v in row.items() if v is not None})


def _reading(path: Path, kind: str, read: Any) -> Any:
    """Call the `datasets` reader; its failures (pyarrow, fsspec, json) become one line."""
    try:
        return read()
    except Exception as err:  # a third-party reader: any failure means "not readable as kind"
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError("--dataset", path, f"cannot read it as {kind}: {detail}",
                         f"pass a {KINDS}") from None


def _quiet_datasets() -> Any:
    import datasets

    # Every rank reads the data; N copies of "Generating train split" say nothing.
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets
