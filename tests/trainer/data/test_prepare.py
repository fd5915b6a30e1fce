"""data.prepare and data.summary: the whole path from a file on disk to token ids."""

from __future__ import annotations

import pytest
from mgft.spec.job import DataFormat, Overlong, TrainSpec
from mgft_train import demo_assets as tiny_mod
from mgft_train.data import IGNORE, make_loader, prepare, summary
from mgft_train.errors import UsageError

ROWS = tiny_mod.make_rows(24, seed=5)
# What each format trains on for the same task row: the answer, and how it ends.
TRAINED = {
    "alpaca": lambda r, eos: r.output + eos,
    "prompt_completion": lambda r, eos: r.output + eos,
    "sharegpt": lambda r, eos: r.output + "<|im_end|>\n",
    "messages": lambda r, eos: r.output + "<|im_end|>\n",
    "text": lambda r, eos: tiny_mod.render_prompt(r) + r.output + eos,  # all but BOS
}


def spec(path, **kw) -> TrainSpec:
    return TrainSpec(model="m", dataset=str(path), **kw)


@pytest.mark.parametrize("file_type", sorted(tiny_mod.FILE_TYPES))
@pytest.mark.parametrize("fmt", tiny_mod.FORMATS)
def test_every_format_in_every_file_type_trains_on_the_answers(tmp_path, tokenizer, fmt,
                                                               file_type):
    path = tiny_mod.write_data(tmp_path / tiny_mod.FILE_TYPES[file_type],
                               [tiny_mod.as_format(r, fmt) for r in ROWS], file_type)
    data = prepare(spec(path, chat_template="chatml", seq_len=512), tokenizer)
    assert data.format is DataFormat(fmt)
    assert len(data.examples) == len(ROWS)
    trained = [tokenizer.decode([t for t in e.labels if t != IGNORE]) for e in data.examples]
    assert trained == [TRAINED[fmt](r, tokenizer.eos_token) for r in ROWS]


def test_summary_reports_cuts_drops_and_packing(tmp_path, tokenizer):
    path = tiny_mod.write_data(tmp_path / "d.jsonl",
                               [tiny_mod.as_format(r, "alpaca") for r in ROWS], "jsonl")
    lengths = sorted(len(e.input_ids) for e in prepare(spec(path), tokenizer).examples)
    cut = lengths[len(lengths) // 2]  # about half the samples are longer than this
    longer = sum(n > cut for n in lengths)
    truncated = prepare(spec(path, seq_len=max(cut, 16)), tokenizer)
    loader = make_loader(truncated.examples, micro_batch=2, pad_id=0, rank=0, world_size=1,
                         seed=0, pack_len=truncated.seq_len)
    line = summary(truncated, loader)
    assert line.startswith(f"data: 24 alpaca rows from d.jsonl; {longer} truncated to "
                           f"--seq-len {cut}; 24 samples, ")
    assert f"; packed into {len(loader.dataset)} sequences (" in line

    dropped = prepare(spec(path, seq_len=cut, overlong=Overlong.DROP), tokenizer)
    unpacked = make_loader(dropped.examples, micro_batch=2, pad_id=0, rank=0, world_size=1,
                           seed=0)
    assert summary(dropped, unpacked).startswith(
        f"data: 24 alpaca rows from d.jsonl; {longer} longer than --seq-len {cut} dropped; "
        f"{24 - longer} samples, ")
    assert "packed" not in summary(dropped, unpacked)


def test_nothing_left_to_train_on_fails_saying_why(tmp_path, tokenizer):
    path = tiny_mod.write_data(tmp_path / "d.jsonl",
                               [tiny_mod.as_format(r, "alpaca") for r in ROWS], "jsonl")
    with pytest.raises(UsageError) as err:
        prepare(spec(path, seq_len=16, overlong=Overlong.DROP), tokenizer)
    assert str(err.value) == (
        f"--dataset {path}: no sample left to train on: of 24, 24 are longer than --seq-len 16 "
        "(--overlong drop) and 0 have no response token within it; raise --seq-len (now 16) "
        "or use --overlong truncate")


def test_chat_data_without_any_template_fails_before_tokenizing(tmp_path, tokenizer):
    path = tiny_mod.write_data(tmp_path / "d.jsonl",
                               [tiny_mod.as_format(r, "messages") for r in ROWS], "jsonl")
    with pytest.raises(UsageError, match=r"^--chat-template \(not set\): the tokenizer in m has"):
        prepare(spec(path), tokenizer)
