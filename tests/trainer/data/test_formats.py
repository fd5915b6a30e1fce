from __future__ import annotations

import json

import pytest
from mgft.spec.job import DataFormat
from mgft_train.data import read
from mgft_train.data.formats import Chat, PromptCompletion, Row, Text
from mgft_train.errors import UsageError

from tests.trainer.data.conftest import write_jsonl, write_lines

CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
ONE_OF_EACH = {
    DataFormat.ALPACA: ({"instruction": "i", "input": "x", "output": "o"},
                        Row(instruction="i", input="x", output="o")),
    DataFormat.SHAREGPT: ({"conversations": [{"from": "human", "value": "hi"},
                                             {"from": "gpt", "value": "hello"}]},
                          Chat(messages=tuple(CHAT))),
    DataFormat.MESSAGES: ({"messages": CHAT}, Chat(messages=tuple(CHAT))),
    DataFormat.TEXT: ({"text": "just text"}, Text(text="just text")),
    DataFormat.PROMPT_COMPLETION: ({"prompt": "p", "completion": "c"},
                                   PromptCompletion(prompt="p", completion="c")),
}


@pytest.mark.parametrize("fmt", list(ONE_OF_EACH))
def test_each_format_is_detected_from_its_keys(tmp_path, fmt):
    row, record = ONE_OF_EACH[fmt]
    parsed = read(str(write_jsonl(tmp_path / "d.jsonl", [row, row])))
    assert parsed.format is fmt
    assert parsed.records == [record, record]
    assert parsed.records[1].where == f"{tmp_path / 'd.jsonl'}:2"


def test_structured_keys_win_and_a_named_format_overrides_detection(tmp_path):
    row = {"instruction": "i", "output": "o", "text": "### Instruction: i ... o"}
    path = str(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert read(path).format is DataFormat.ALPACA
    assert read(path, DataFormat.TEXT).records == [Text(text=row["text"])]


def test_a_row_of_no_known_format_lists_the_formats(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(UsageError) as err:
        read(str(path))
    assert str(err.value).startswith(
        f"--dataset {path}:1: cannot tell the format from its keys ['answer', 'question']; "
        "use the keys of one of: sharegpt (conversations); messages (messages); alpaca "
        "(instruction, output);")
    assert str(err.value).endswith("or name it with --data-format")


GOOD = {f: row for f, (row, _) in ONE_OF_EACH.items()}


@pytest.mark.parametrize(("fmt", "bad", "says"), [
    (DataFormat.ALPACA, {"instruction": "i"}, "missing key 'output'"),
    (DataFormat.ALPACA, {"instruction": "i", "output": 3}, "key 'output' is a int, not a string"),
    (DataFormat.ALPACA, {"instruction": "i", "input": None, "output": "o"},
     "key 'input' is a NoneType"),
    (DataFormat.PROMPT_COMPLETION, {"prompt": "p"}, "missing key 'completion'"),
    (DataFormat.TEXT, {"text": ["a"]}, "key 'text' is a list, not a string"),
    (DataFormat.MESSAGES, {"messages": []}, "key 'messages' is an empty list"),
    (DataFormat.MESSAGES, {"messages": "hi"}, "key 'messages' is a str, not a list of turns"),
    (DataFormat.MESSAGES, {"messages": [{"role": "user"}]}, "missing key messages[0]'content'"),
    (DataFormat.MESSAGES, {"messages": [CHAT[0], "hi"]}, "messages[1] is a str, not an object"),
    (DataFormat.MESSAGES, {"messages": [CHAT[0]]}, "has no assistant turn"),
    (DataFormat.MESSAGES, {"messages": [CHAT[0], {"role": "assistant", "content": [{}]}]},
     "key messages[1]'content' is a list, not a string"),
    (DataFormat.SHAREGPT, {"conversations": [{"from": "gpt"}]},
     "missing key conversations[0]'value'"),
    (DataFormat.SHAREGPT, {"conversations": [{"from": "robot", "value": "x"}]},
     "conversations[0]['from'] is 'robot', not a known speaker"),
])
def test_a_malformed_row_is_named_by_file_line_and_field(tmp_path, fmt, bad, says):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD[fmt]), "", json.dumps(bad)])
    with pytest.raises(UsageError) as err:
        read(str(path))
    assert str(err.value).startswith(f"--dataset {path}:3: {says}")


def test_sharegpt_speakers_map_to_chat_roles_and_a_side_system_prompt_leads(tmp_path):
    row = {"system": "be brief", "conversations": [
        {"from": "human", "value": "q"}, {"from": "GPT", "value": "a"},
        {"from": "observation", "value": "o"}, {"from": "model", "value": "b"}]}
    (chat,) = read(str(write_jsonl(tmp_path / "d.jsonl", [row]))).records
    assert [(m["role"], m["content"]) for m in chat.messages] == [
        ("system", "be brief"), ("user", "q"), ("assistant", "a"), ("tool", "o"),
        ("assistant", "b")]


def test_an_empty_file_fails_clearly(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ["", "   "])
    with pytest.raises(UsageError) as err:
        read(str(path))
    assert str(err.value) == (f"--dataset {path}: holds no rows; check the path, or that the "
                              "file was written completely")
