"""Bad data through the trainer's entry point: exit 2 and one line, before any process group."""

from __future__ import annotations

import json

import pytest
from mgft_train.main import main

from tests.trainer.data.conftest import write_jsonl, write_lines, write_table

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


def run(tiny, data, tmp_path, capsys, *extra: str) -> str:
    out = tmp_path / "out"
    code = main([f"--model={tiny.model_dir}", f"--dataset={data}", f"--output={out}", *extra])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert not out.exists()
    return captured.err


@pytest.mark.usefixtures("single_process_env")
def test_a_malformed_parquet_row_is_named_by_row_and_field(tiny, tmp_path, capsys):
    data = write_table(tmp_path / "d.parquet", [GOOD, GOOD, {"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant"}]}], "parquet")
    err = run(tiny, data, tmp_path, capsys, "--chat-template=chatml")
    assert err.startswith(f"mgft-train: --dataset {data} row 3: missing key "
                          "messages[1]'content'; messages rows need 'messages'")


@pytest.mark.usefixtures("single_process_env")
def test_chat_data_for_a_tokenizer_without_a_template_names_the_fix(tiny, tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [GOOD])
    err = run(tiny, data, tmp_path, capsys)
    assert err == (f"mgft-train: --chat-template (not set): the tokenizer in {tiny.model_dir} "
                   "has no chat template to render chat rows with; pass --chat-template chatml "
                   "(or llama3, or a .jinja file), or add a chat_template to the model's "
                   "tokenizer_config.json\n")


@pytest.mark.usefixtures("single_process_env")
def test_an_empty_dataset_fails_clearly(tiny, tmp_path, capsys):
    data = write_lines(tmp_path / "d.jsonl", [""])
    assert run(tiny, data, tmp_path, capsys).startswith(
        f"mgft-train: --dataset {data}: holds no rows;")


@pytest.mark.usefixtures("single_process_env")
def test_a_format_forced_against_the_data_names_the_missing_key(tiny, tmp_path, capsys):
    data = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": "t"})])
    assert run(tiny, data, tmp_path, capsys, "--data-format=alpaca").startswith(
        f"mgft-train: --dataset {data}:1: missing key 'instruction'")


@pytest.mark.usefixtures("single_process_env")
def test_all_samples_too_long_to_keep_fails_clearly(tiny, tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "word " * 40}])
    assert run(tiny, data, tmp_path, capsys, "--seq-len=16", "--overlong=drop").startswith(
        f"mgft-train: --dataset {data}: no sample left to train on: of 1, 1 are longer than "
        "--seq-len 16 (--overlong drop)")
