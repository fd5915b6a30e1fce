from __future__ import annotations

import pytest
from mgft.spec.job import Overlong
from mgft_train.data.encode import IGNORE, encode_samples
from mgft_train.data.formats import Row
from mgft_train.data.templates import BUILTIN_CHAT_TEMPLATES, Sample, render_prompt, to_sample

from tests.trainer.data.test_templates import TALK

ROW = Row(instruction="Reverse the words.", input="red blue green", output="green blue red")


def prompt_ids(tokenizer, row: Row) -> list[int]:
    return tokenizer(render_prompt(row), add_special_tokens=True)["input_ids"]


def sample(row: Row = ROW, train_on_prompt: bool = False) -> Sample:
    return to_sample(row, None, None, train_on_prompt)


def test_labels_mask_exactly_the_prompt_and_keep_response_and_eos(tokenizer):
    (ex,), stats = encode_samples([sample()], tokenizer, seq_len=512)
    n_prompt = len(prompt_ids(tokenizer, ROW))
    assert ex.input_ids[0] == tokenizer.bos_token_id
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ex.labels[n_prompt:-1]) == ROW.output
    assert (stats.tokens, stats.trained_tokens) == (len(ex.input_ids), len(ex.input_ids) - n_prompt)


def test_train_on_prompt_labels_every_token_but_the_unpredictable_first(tokenizer):
    (ex,), _ = encode_samples([sample(train_on_prompt=True)], tokenizer, seq_len=512)
    assert ex.labels == [IGNORE, *ex.input_ids[1:]]


def test_chat_labels_are_the_assistant_turns_with_their_end_markers(tokenizer):
    chat = to_sample(TALK, tokenizer, BUILTIN_CHAT_TEMPLATES["chatml"], train_on_prompt=False)
    (ex,), _ = encode_samples([chat], tokenizer, seq_len=512)
    assert ex.input_ids[0] != tokenizer.bos_token_id  # chatml writes no BOS; nor do we
    assert ex.input_ids[-1] != tokenizer.eos_token_id  # the template's <|im_end|> ends turns
    trained = [t if t != IGNORE else None for t in ex.labels]
    spans, current = [], []
    for t in trained + [None]:
        if t is None and current:
            spans.append(tokenizer.decode(current))
            current = []
        elif t is not None:
            current.append(t)
    assert spans == ["1<|im_end|>\n", "2<|im_end|>\n"]


def test_over_long_samples_are_truncated_or_dropped_and_counted(tokenizer):
    n_prompt = len(prompt_ids(tokenizer, ROW))
    short = Row(instruction="Say hi.", output="hi")
    samples = [sample(), sample(short), sample()]
    (a, b, c), stats = encode_samples(samples, tokenizer, seq_len=n_prompt + 2)
    assert len(a.input_ids) == len(a.labels) == n_prompt + 2
    assert [t for t in a.labels if t != IGNORE] == a.input_ids[n_prompt:]
    assert tokenizer.eos_token_id not in a.input_ids  # the tail went, EOS with it
    assert b.input_ids[-1] == tokenizer.eos_token_id  # short enough: untouched
    assert (stats.samples, stats.truncated, stats.dropped_long) == (3, 2, 0)

    (kept,), stats = encode_samples(samples, tokenizer, n_prompt + 2, Overlong.DROP)
    assert kept.input_ids == b.input_ids
    assert (stats.truncated, stats.dropped_long, stats.tokens) == (0, 2, len(b.input_ids))


def test_a_sample_whose_response_is_cut_away_entirely_is_dropped_and_counted(tokenizer):
    n_prompt = len(prompt_ids(tokenizer, ROW))
    examples, stats = encode_samples([sample()], tokenizer, seq_len=n_prompt - 3)
    assert examples == []
    assert (stats.truncated, stats.dropped_untrained) == (1, 1)


@pytest.mark.parametrize("text", ["a", "x" * 200])
def test_plain_text_is_trained_whole_with_bos_and_eos(tokenizer, text):
    from mgft_train.data.formats import Text

    (ex,), _ = encode_samples([to_sample(Text(text=text), None, None, False)], tokenizer, 512)
    assert ex.input_ids[0] == tokenizer.bos_token_id
    assert ex.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ex.input_ids[1:-1]) == text
    assert ex.labels == [IGNORE, *ex.input_ids[1:]]
