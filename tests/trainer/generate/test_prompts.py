"""Prompt rows: validation with line numbers, and the exact text each kind renders to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mgft_train.data import Row, render_prompt
from mgft_train.errors import UsageError
from mgft_train.generate import prompts


def write(tmp_path: Path, *rows) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("bad,needle", [
    ("[1, 2]", "a JSON list, not an object"),
    ("{oops", "invalid JSON"),
    ({"text": "hi"}, "no 'prompt', 'messages' or 'instruction' key"),
    ({"prompt": 3}, "'prompt' is not a string"),
    ({"messages": [{"role": "user"}]}, "'messages' is not a non-empty list"),
    ({"instruction": "a", "input": 5}, "'instruction' and 'input' must be strings"),
])
def test_bad_rows_name_their_line(tmp_path: Path, bad, needle: str) -> None:
    path = write(tmp_path, {"prompt": "fine"}, "", bad)
    with pytest.raises(UsageError, match=needle) as err:
        prompts.load_rows(path)
    assert str(err.value).startswith(f"--prompts {path}:3: ")


def test_each_kind_renders_as_documented(tmp_path: Path, tokenizer) -> None:
    rows = prompts.load_rows(write(tmp_path, {"prompt": "Sort: b a", "id": 7},
                                   {"instruction": "Sort the words.", "input": "b a"}))
    first, second = prompts.encode(rows, tokenizer, chat_template=False)
    assert (first.index, first.row, first.text) == (0, {"prompt": "Sort: b a", "id": 7},
                                                     "Sort: b a")
    # The training prompt format, so a model fine-tuned by mgft sees what it learned on.
    assert second.text == render_prompt(Row(instruction="Sort the words.", output="",
                                            input="b a"))
    assert second.ids == tokenizer(second.text)["input_ids"]
    assert second.ids[0] == tokenizer.bos_token_id


def test_chat_template_is_required_where_used(tmp_path: Path, tokenizer) -> None:
    rows = prompts.load_rows(write(tmp_path, {"prompt": "x"},
                                   {"messages": [{"role": "user", "content": "hi"}]}))
    assert tokenizer.chat_template is None
    with pytest.raises(UsageError, match=r"p.jsonl:2: a 'messages' row needs a chat template"):
        prompts.check_template(tokenizer, "M", rows, chat_template=False)
    with pytest.raises(UsageError, match="--chat-template M: the tokenizer has no chat"):
        prompts.check_template(tokenizer, "M", rows[:1], chat_template=True)
    prompts.check_template(tokenizer, "M", rows[:1], chat_template=False)  # plain: fine
