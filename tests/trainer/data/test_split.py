"""The eval set (data.split, data.prepare): held-out rows are never trained on.

--eval-split holds rows out by their row number, under the documented rule; --eval-dataset's
rows are read apart and none of --dataset's is held out.
"""

from __future__ import annotations

import random

import pytest
from mgft.spec.job import TrainSpec
from mgft_train import demo_assets as tiny_mod
from mgft_train.data import encode, load_rows, make_loader, prepare, summary
from mgft_train.data.split import held_out, split
from mgft_train.data.templates import BUILTIN_CHAT_TEMPLATES
from mgft_train.errors import UsageError

from tests.trainer.data.conftest import write_jsonl

ROWS = tiny_mod.make_rows(40, seed=5)


@pytest.fixture
def data_file(tmp_path):
    assert len(set(ROWS)) == len(ROWS)  # distinct rows: content tells rows apart too
    return write_jsonl(tmp_path / "d.jsonl", [tiny_mod.as_format(r, "alpaca") for r in ROWS])


def test_held_out_rows_are_the_last_of_a_seeded_shuffle_rounded_to_the_nearest_row():
    for rows, fraction, seed, count in [(10, 0.25, 0, 3), (256, 0.1, 0, 26), (40, 0.2, 7, 8)]:
        order = list(range(rows))
        random.Random(f"mgft eval split {seed}").shuffle(order)  # the documented rule
        assert held_out(rows, fraction, seed) == sorted(order[rows - count:])
    assert held_out(40, 0.2, seed=0) == held_out(40, 0.2, seed=0)
    assert held_out(40, 0.2, seed=0) != held_out(40, 0.2, seed=1)


def test_eval_split_trains_on_every_other_row_and_evaluates_on_the_held_out_ones(
        data_file, tokenizer):
    data = prepare(TrainSpec(model="m", dataset=str(data_file), eval_split=0.2, seed=3),
                   tokenizer)

    held = held_out(len(ROWS), 0.2, seed=3)
    trained = [i for i in range(len(ROWS)) if i not in held]
    assert len(held) == 8 and sorted(held + trained) == list(range(len(ROWS)))
    records = load_rows(str(data_file))
    assert data.examples == encode([records[i] for i in trained], tokenizer, 1024)
    assert data.eval is not None
    assert data.eval.examples == encode([records[i] for i in held], tokenizer, 1024)
    trained_ids = {tuple(e.input_ids) for e in data.examples}
    assert not any(tuple(e.input_ids) in trained_ids for e in data.eval.examples)
    assert data.eval.source == "--eval-split 0.2 of d.jsonl"


def test_eval_dataset_rows_are_read_apart_and_every_dataset_row_is_trained(
        data_file, tmp_path, tokenizer):
    eval_rows = tiny_mod.make_rows(6, seed=9)
    eval_file = write_jsonl(tmp_path / "e.jsonl",
                            [tiny_mod.as_format(r, "messages") for r in eval_rows])
    data = prepare(TrainSpec(model="m", dataset=str(data_file), eval_dataset=str(eval_file),
                             chat_template="chatml"), tokenizer)

    assert data.examples == encode(load_rows(str(data_file)), tokenizer, 1024)
    assert data.eval is not None
    assert data.eval.examples == encode(load_rows(str(eval_file)), tokenizer, 1024,
                                        chat_template=BUILTIN_CHAT_TEMPLATES["chatml"])
    loader = make_loader(data.examples, micro_batch=2, pad_id=0, rank=0, world_size=1, seed=0)
    assert summary(data, loader).endswith(
        f"; eval: 6 held-out samples (--eval-dataset e.jsonl), "
        f"{data.eval.stats.trained_tokens} tokens scored")


@pytest.mark.parametrize("fraction,problem", [
    (0.01, "holds out no row: d.jsonl has 40 rows, and 40 x 0.01 rounds to 0; use 1/40 or more"),
    (0.99, "holds out all 40 rows of d.jsonl, leaving none to train on; use 39/40 or less")])
def test_a_split_that_leaves_either_side_empty_is_refused(data_file, tokenizer, fraction,
                                                          problem):
    with pytest.raises(UsageError) as err:
        prepare(TrainSpec(model="m", dataset=str(data_file), eval_split=fraction), tokenizer)
    assert str(err.value).startswith(f"--eval-split {fraction}: ")
    assert problem.replace("d.jsonl", str(data_file)) in str(err.value)
    assert split(ROWS, 0.025, seed=0, source="d")[1]  # 1 row of 40: enough


def test_a_bad_eval_row_is_named_by_eval_dataset_file_and_line(data_file, tmp_path, tokenizer):
    eval_file = write_jsonl(tmp_path / "e.jsonl", [{"instruction": "a", "output": "b"},
                                                   {"instruction": "a"}])
    with pytest.raises(UsageError) as err:
        prepare(TrainSpec(model="m", dataset=str(data_file), eval_dataset=str(eval_file)),
                tokenizer)
    assert str(err.value).startswith(f"--eval-dataset {eval_file}:2: missing key 'output'")
