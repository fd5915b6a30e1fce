"""mgft_train.jsonrows.check_head: the first rows, checked as the full read checks them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mgft_train import jsonrows
from mgft_train.errors import UsageError

ROW = json.dumps({"instruction": "a", "output": "b"})


def head_error(path: Path, flag: str = "--dataset") -> str:
    with pytest.raises(UsageError) as err:
        jsonrows.check_head(str(path), flag)
    return str(err.value)


def read_error(path: Path) -> str:
    from mgft_train.data import read  # the trainer's full read (imports torch)

    with pytest.raises(UsageError) as err:
        read(str(path))
    return str(err.value)


@pytest.mark.parametrize(("name", "data"), [
    ("bad.jsonl", f"{ROW}\n\n{ROW[:-1]}\n{ROW}\n".encode()),  # invalid JSON, line 3
    ("list.jsonl", f"{ROW}\n[1, 2]\n".encode()),  # a row that is not an object
    ("array.jsonl", f"[{ROW}, {ROW}]\n".encode()),  # a .json array saved as .jsonl
    ("bad.json", f"[\n{ROW},\n{ROW[:-1]}\n]".encode()),
    ("latin1.jsonl", f"{ROW}\n".encode() + b'{"instruction": "caf\xe9", "output": "b"}\n'),
    ("empty.jsonl", b""),
    ("blank.jsonl", b"\n  \n"),
    ("empty.json", b"[ ]"),
    ("data.csv", b"a,b\n"),
    ("noext", f"{ROW}\n".encode()),
])
def test_the_head_finds_what_the_full_read_finds_in_the_same_words(tmp_path: Path, name: str,
                                                                    data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    assert head_error(path) == read_error(path)


def test_only_the_first_rows_are_read(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(f"{ROW}\n" * jsonrows.HEAD_ROWS + "{not json\n")
    jsonrows.check_head(str(path))  # the trainer finds that one as it reads every row


def test_a_large_json_array_is_read_only_as_far_as_its_first_rows(tmp_path: Path,
                                                                   monkeypatch) -> None:
    monkeypatch.setattr(jsonrows, "HEAD_BYTES", 1000)
    path = tmp_path / "d.json"
    path.write_text("[\n" + ",\n".join([ROW] * 200) + "\n]")  # 8 kB: cut inside a row
    jsonrows.check_head(str(path), rows=500)
    path.write_text("[\n" + ROW + ",\n" + ROW[:-1] + ",\n" + ",\n".join([ROW] * 200) + "\n]")
    assert head_error(path) == read_error(path)  # row 2, well inside the head


def test_a_pretty_printed_row_cut_by_the_head_is_not_an_error(tmp_path: Path,
                                                              monkeypatch) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}] * 50,
                               indent=2))
    for cut in range(100, 400, 7):  # every line of the first rows
        monkeypatch.setattr(jsonrows, "HEAD_BYTES", cut)
        jsonrows.check_head(str(path))


def test_a_multibyte_character_cut_by_the_head_is_not_an_error(tmp_path: Path,
                                                               monkeypatch) -> None:
    path = tmp_path / "d.json"
    text = "[\n" + ",\n".join([json.dumps({"instruction": "é" * 40, "output": "b"},
                                          ensure_ascii=False)] * 50) + "\n]"
    path.write_text(text, encoding="utf-8")
    for cut in range(200, 260):  # one of these falls inside a 2-byte "é"
        monkeypatch.setattr(jsonrows, "HEAD_BYTES", cut)
        jsonrows.check_head(str(path))


def test_errors_name_the_flag_that_named_the_file(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text(f"{ROW}\n{{\n")
    assert head_error(path, "--eval-dataset").startswith(f"--eval-dataset {path}:2: invalid JSON")
    path.write_text("")
    assert head_error(path, "--eval-dataset") == (
        f"--eval-dataset {path}: holds no rows; check the path, or that the file was written "
        "completely")


def test_directories_and_parquet_are_left_to_datasets(tmp_path: Path) -> None:
    jsonrows.check_head(str(tmp_path))
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    jsonrows.check_head(str(tmp_path / "d.parquet"))


def test_the_input_checks_import_no_torch() -> None:
    """The launcher runs them before torchrun starts (mgft.backends.local.inputs)."""
    code = ("import sys; import mgft_train.checks, mgft_train.jsonrows; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
