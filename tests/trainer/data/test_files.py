from __future__ import annotations

import json

import pytest
from mgft_train.data.files import iter_rows
from mgft_train.errors import UsageError

from tests.trainer.data.conftest import write_jsonl, write_lines, write_table

ROWS = [{"instruction": "a", "output": "b"}, {"instruction": "c", "input": "x", "output": "d"}]


def read(path) -> list[tuple[str, dict]]:
    return [(r.where, r.fields) for r in iter_rows(str(path))]


def test_jsonl_rows_are_named_by_line_skipping_blank_lines(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(ROWS[0]), "", "  ", json.dumps(ROWS[1])])
    assert read(path) == [(f"{path}:1", ROWS[0]), (f"{path}:4", ROWS[1])]


def test_json_array_rows_are_named_by_the_line_they_start_on(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    # indent=2: "[", then each object opens on its own line, 4 and 5 lines long.
    assert read(path) == [(f"{path}:2", ROWS[0]), (f"{path}:6", ROWS[1])]
    compact = tmp_path / "c.json"
    compact.write_text(json.dumps(ROWS), encoding="utf-8")
    assert [f for _, f in read(compact)] == ROWS


def test_json_lines_under_a_json_name_are_read_as_lines(tmp_path):
    path = write_jsonl(tmp_path / "d.json", ROWS)
    assert read(path) == [(f"{path}:1", ROWS[0]), (f"{path}:2", ROWS[1])]


@pytest.mark.parametrize(("text", "line", "says"), [
    ('[\n {"instruction": "a", "output": "b"},\n {"instruction": "a" "output": "b"}\n]', 3,
     "invalid JSON: Expecting ','"),
    ('[\n {"instruction": "a", "output": "b"},\n "just text"\n]', 3, "row is a JSON str"),
    ('[\n {"instruction": "a", "output": "b"}\n {"instruction": "a"}]', 3,
     "invalid JSON: expected ',' or ']'"),
])
def test_a_bad_json_array_item_is_named_by_its_line(tmp_path, text, line, says):
    path = tmp_path / "d.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as err:
        read(path)
    assert str(err.value).startswith(f"--dataset {path}:{line}: {says}")


def test_an_array_in_a_jsonl_file_gets_a_hint(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(ROWS)])
    with pytest.raises(UsageError, match=r"not an object \(a .json array\?"):
        read(path)


def test_parquet_rows_are_named_by_row_and_absent_values_are_missing_keys(tmp_path):
    path = write_table(tmp_path / "d.parquet", ROWS, "parquet")
    # The table has an "input" column; row 1 holds None there, read as no "input" key.
    assert read(path) == [(f"{path} row 1", ROWS[0]), (f"{path} row 2", ROWS[1])]


def test_save_to_disk_directories_are_read_and_a_dict_uses_train(tmp_path):
    import datasets

    path = write_table(tmp_path / "saved", ROWS, "disk")
    assert read(path) == [(f"{path} row 1", ROWS[0]), (f"{path} row 2", ROWS[1])]
    splits = tmp_path / "splits"
    one = datasets.Dataset.from_dict({"text": ["t"]})
    datasets.DatasetDict({"train": one, "test": one.from_dict({"text": ["u"]})}).save_to_disk(
        str(splits))
    assert read(splits) == [(f"{splits} (split train) row 1", {"text": "t"})]
    only = tmp_path / "only"
    datasets.DatasetDict({"eval": one}).save_to_disk(str(only))
    assert read(only) == [(f"{only} (split eval) row 1", {"text": "t"})]
    neither = tmp_path / "neither"
    datasets.DatasetDict({"a": one, "b": one}).save_to_disk(str(neither))
    with pytest.raises(UsageError, match=r"holds splits \['a', 'b'\] and none is 'train'"):
        read(neither)


@pytest.mark.parametrize(("name", "content", "says"), [
    ("d.parquet", b"not parquet", "cannot read it as parquet: "),
    ("d.csv", b"a,b\n", "unknown file type '.csv'"),
    ("d.jsonl", b'{"text": "caf\xe9"}\n', "not UTF-8 text (invalid continuation byte at byte 13)"),
])
def test_unreadable_files_fail_in_one_line(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UsageError) as err:
        read(path)
    message = str(err.value)
    assert message.startswith(f"--dataset {path}: {says}")
    assert "\n" not in message


def test_a_directory_that_is_no_saved_dataset_fails_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UsageError) as err:
        read(tmp_path)
    assert str(err.value).startswith(f"--dataset {tmp_path}: cannot read it as a save_to_disk "
                                     "directory: ")
