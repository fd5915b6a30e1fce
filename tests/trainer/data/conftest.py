"""Data fixtures: real files written in tmp dirs, read back by the real readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_table(path: Path, rows: list[dict[str, Any]], kind: str) -> Path:
    """A parquet file or a save_to_disk directory, written by `datasets` itself."""
    import datasets

    datasets.disable_progress_bars()
    columns = sorted({k for r in rows for k in r})
    table = datasets.Dataset.from_dict({c: [r.get(c) for r in rows] for c in columns})
    if kind == "parquet":
        table.to_parquet(str(path))
    else:
        table.save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def base_model(tiny):
    """The tiny Llama as loaded by default (sdpa attention), in eval mode: no dropout."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True).eval()
