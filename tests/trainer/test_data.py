from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mgft_train.data import (
    IGNORE,
    Example,
    Row,
    collate,
    encode,
    label_tokens,
    load_rows,
    make_loader,
    real_tokens,
    render_prompt,
)
from mgft_train.errors import UsageError

ROW = Row(instruction="Reverse the words.", input="red blue green", output="green blue red")


def prompt_ids(tokenizer, row: Row) -> list[int]:
    return tokenizer(render_prompt(row), add_special_tokens=True)["input_ids"]


def test_labels_mask_exactly_the_prompt_and_keep_response_and_eos(tokenizer):
    (ex,) = encode([ROW], tokenizer, seq_len=512)
    n_prompt = len(prompt_ids(tokenizer, ROW))
    assert ex.input_ids[0] == tokenizer.bos_token_id
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ex.labels[n_prompt:-1]) == ROW.output


def test_prompt_template_has_input_section_only_when_input_given():
    with_input = render_prompt(ROW)
    without = render_prompt(Row(instruction="Say hi.", output="hi"))
    assert "### Input:\nred blue green\n" in with_input
    assert with_input.endswith("### Response:\n")
    assert "### Input:" not in without
    assert without == "### Instruction:\nSay hi.\n\n### Response:\n"


def test_truncation_cuts_the_end_to_seq_len(tokenizer):
    n_prompt = len(prompt_ids(tokenizer, ROW))
    (ex,) = encode([ROW], tokenizer, seq_len=n_prompt + 2)
    assert len(ex.input_ids) == len(ex.labels) == n_prompt + 2
    assert [t for t in ex.labels if t != IGNORE] == ex.input_ids[n_prompt:]
    assert tokenizer.eos_token_id not in ex.input_ids  # the tail went, EOS with it

    (short,) = encode([ROW], tokenizer, seq_len=n_prompt - 3)
    assert len(short.input_ids) == n_prompt - 3
    assert set(short.labels) == {IGNORE}


def test_collate_right_pads_to_the_batch_longest_and_counts_real_tokens():
    examples = [Example(input_ids=[5, 6, 7], labels=[IGNORE, 6, 7]),
                Example(input_ids=[5, 6, 7, 8, 9], labels=[IGNORE, IGNORE, 7, 8, 9])]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, IGNORE], [IGNORE, IGNORE, 7, 8, 9]]
    assert batch["input_ids"].dtype == torch.long
    assert real_tokens(batch) == 8
    assert label_tokens(batch) == 5


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"instruction": "a", "output": "b"})


@pytest.mark.parametrize(("bad", "says"), [
    (json.dumps({"instruction": "a"}), "missing key 'output'"),
    (json.dumps({"input": "x", "output": "b"}), "missing key 'instruction'"),
    ('{"instruction": "a", "output": ', "invalid JSON"),
    ('[{"instruction": "a", "output": "b"}]', "a .json array?"),
    (json.dumps("just a string"), "not an object"),
    (json.dumps({"instruction": "a", "output": 3}), "key 'output' is a int"),
    (json.dumps({"instruction": "a", "input": None, "output": "b"}), "key 'input' is a NoneType"),
])
def test_bad_rows_are_named_by_file_line_and_problem(tmp_path, bad, says):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, "", GOOD, bad, GOOD])
    with pytest.raises(UsageError) as err:
        load_rows(path)
    assert str(err.value).startswith(f"--dataset {path}:4: ")
    assert says in str(err.value)


def test_empty_dataset_is_refused(tmp_path):
    with pytest.raises(UsageError, match="no rows"):
        load_rows(write_lines(tmp_path / "d.jsonl", ["", "  "]))


def test_rows_load_with_optional_input_and_blank_lines_skipped(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [
        GOOD, "", json.dumps({"instruction": "i", "input": "x", "output": "o", "extra": 1})])
    assert load_rows(path) == [Row(instruction="a", output="b"),
                               Row(instruction="i", input="x", output="o")]


def ids_seen(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch["input_ids"][:, 0]]


def test_loader_shards_ranks_disjointly_and_reshuffles_each_epoch():
    # The first token is the example's index, so each batch says which examples it holds.
    examples = [Example(input_ids=[i, 1], labels=[IGNORE, 1]) for i in range(40)]
    loaders = [make_loader(examples, micro_batch=4, pad_id=0, rank=r, world_size=2, seed=3)
               for r in (0, 1)]
    rank0, rank1 = ids_seen(loaders[0]), ids_seen(loaders[1])
    assert len(rank0) == len(rank1) == 20
    assert sorted(rank0 + rank1) == list(range(40))
    loaders[0].sampler.set_epoch(1)
    assert ids_seen(loaders[0]) != rank0
    again = make_loader(examples, micro_batch=4, pad_id=0, rank=0, world_size=2, seed=3)
    assert ids_seen(again) == rank0  # same seed, same epoch, same order
