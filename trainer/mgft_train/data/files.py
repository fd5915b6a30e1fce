"""Dataset files → raw rows, each tagged with where a user finds it in the file.

.jsonl (one object per line), .json (an array of objects, or JSON Lines under a .json name),
.parquet, and directories written by `datasets`' save_to_disk. JSON is parsed by
`mgft_train.jsonrows` (torch-free: the launcher checks a local job's first rows with it), so an
error can name the line; parquet and saved datasets go through `datasets`, whose rows have no
lines, so they are named by row number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mgft_train.errors import UsageError
from mgft_train.jsonrows import KINDS, RawRow, json_rows, jsonl_rows, suffix_of

__all__ = ["KINDS", "RawRow", "iter_rows"]


def iter_rows(dataset: str) -> Iterator[RawRow]:
    path = Path(dataset)
    if path.is_dir():
        return _saved_rows(path)
    suffix = suffix_of(dataset)
    if suffix == ".jsonl":
        return jsonl_rows(path)
    if suffix == ".json":
        return json_rows(path)
    return _parquet_rows(path)


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
