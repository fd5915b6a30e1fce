"""Raw rows → typed records of one format, detected from the first row or named by the user.

Every row is checked here, before any tokenizer or process group exists, so a bad row 90% into
the file fails in seconds and names its file, line and field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mgft.spec.job import DataFormat

from mgft_train.data.files import RawRow
from mgft_train.errors import UsageError


@dataclass(frozen=True, slots=True)
class Row:
    """alpaca: {"instruction", "input" (optional), "output"}."""

    instruction: str
    output: str
    input: str = ""
    where: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class PromptCompletion:
    prompt: str
    completion: str
    where: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    where: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Chat:
    """messages and sharegpt, both as {"role", "content"} turns (plus any extra keys, e.g.
    tool_calls, which chat templates may read)."""

    messages: tuple[dict[str, Any], ...]
    where: str = field(default="", compare=False)


Record = Row | PromptCompletion | Text | Chat

# Detection order: a row can carry keys of several formats (e.g. alpaca rows with a "text"
# column holding the rendered prompt); the more structured reading wins.
SIGNATURES: dict[DataFormat, tuple[str, ...]] = {
    DataFormat.SHAREGPT: ("conversations",),
    DataFormat.MESSAGES: ("messages",),
    DataFormat.ALPACA: ("instruction", "output"),
    DataFormat.PROMPT_COMPLETION: ("prompt", "completion"),
    DataFormat.TEXT: ("text",),
}
FIXES = {
    DataFormat.ALPACA: "alpaca rows need string 'instruction' and 'output', optional 'input'",
    DataFormat.SHAREGPT: "sharegpt rows need 'conversations': a list of {\"from\", \"value\"}",
    DataFormat.MESSAGES: "messages rows need 'messages': a list of {\"role\", \"content\"}",
    DataFormat.TEXT: "text rows need a string 'text'",
    DataFormat.PROMPT_COMPLETION: "prompt_completion rows need string 'prompt' and 'completion'",
}
# ShareGPT exports name speakers many ways; chat templates know system/user/assistant/tool.
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
                  "bard": "assistant", "bing": "assistant", "function_call": "assistant",
                  "tool": "tool", "function": "tool", "observation": "tool"}


@dataclass(frozen=True, slots=True)
class Parsed:
    format: DataFormat
    records: list[Record]


def parse(rows: Iterable[RawRow], fmt: DataFormat, source: str) -> Parsed:
    records: list[Record] = []
    for raw in rows:
        if fmt is DataFormat.AUTO:
            fmt = detect(raw)
        records.append(PARSERS[fmt](raw.fields, raw.where, FIXES[fmt]))
    if not records:
        raise UsageError("--dataset", source, "holds no rows",
                         "check the path, or that the file was written completely")
    return Parsed(format=fmt, records=records)


def detect(raw: RawRow) -> DataFormat:
    for fmt, keys in SIGNATURES.items():
        if all(k in raw.fields for k in keys):
            return fmt
    known = "; ".join(f"{f.value} ({', '.join(k)})" for f, k in SIGNATURES.items())
    raise UsageError("--dataset", raw.where,
                     f"cannot tell the format from its keys {sorted(raw.fields)}",
                     f"use the keys of one of: {known}; or name it with --data-format")


def _string(obj: dict[str, Any], key: str, where: str, fix: str, *, optional: bool = False,
            label: str = "") -> str:
    name = f"{label}{key!r}"
    if key not in obj:
        if optional:
            return ""
        raise UsageError("--dataset", where, f"missing key {name}", fix)
    value = obj[key]
    if not isinstance(value, str):
        raise UsageError("--dataset", where,
                         f"key {name} is a {type(value).__name__}, not a string", fix)
    return value


def _list(obj: dict[str, Any], key: str, where: str, fix: str) -> list[Any]:
    if key not in obj:
        raise UsageError("--dataset", where, f"missing key {key!r}", fix)
    value = obj[key]
    if not isinstance(value, list | tuple) or not value:
        kind = "an empty list" if isinstance(value, list | tuple) else \
            f"a {type(value).__name__}"
        raise UsageError("--dataset", where, f"key {key!r} is {kind}, not a list of turns", fix)
    return list(value)


def _alpaca(obj: dict[str, Any], where: str, fix: str) -> Row:
    return Row(instruction=_string(obj, "instruction", where, fix),
               input=_string(obj, "input", where, fix, optional=True),
               output=_string(obj, "output", where, fix), where=where)


def _prompt_completion(obj: dict[str, Any], where: str, fix: str) -> PromptCompletion:
    return PromptCompletion(prompt=_string(obj, "prompt", where, fix),
                            completion=_string(obj, "completion", where, fix), where=where)


def _text(obj: dict[str, Any], where: str, fix: str) -> Text:
    return Text(text=_string(obj, "text", where, fix), where=where)


def _turn(item: Any, key: str, index: int, where: str, fix: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise UsageError("--dataset", where,
                         f"{key}[{index}] is a {type(item).__name__}, not an object", fix)
    # Arrow fills a turn's absent keys with None (its struct type is the union of all turns).
    return {k: v for k, v in item.items() if v is not None}


def _messages(obj: dict[str, Any], where: str, fix: str) -> Chat:
    turns = []
    for i, item in enumerate(_list(obj, "messages", where, fix)):
        turn = _turn(item, "messages", i, where, fix)
        label = f"messages[{i}]"
        _string(turn, "role", where, fix, label=label)
        _string(turn, "content", where, fix, label=label)
        turns.append(turn)
    return _chat(turns, where, fix)


def _sharegpt(obj: dict[str, Any], where: str, fix: str) -> Chat:
    turns = []
    system = _string(obj, "system", where, fix, optional=True)  # some exports keep it aside
    if system:
        turns.append({"role": "system", "content": system})
    for i, item in enumerate(_list(obj, "conversations", where, fix)):
        turn = _turn(item, "conversations", i, where, fix)
        label = f"conversations[{i}]"
        speaker = _string(turn, "from", where, fix, label=label)
        if speaker.lower() not in SHAREGPT_ROLES:
            raise UsageError("--dataset", where,
                             f"{label}['from'] is {speaker!r}, not a known speaker",
                             f"use one of {', '.join(sorted(SHAREGPT_ROLES))}")
        turns.append({"role": SHAREGPT_ROLES[speaker.lower()],
                      "content": _string(turn, "value", where, fix, label=label)})
    return _chat(turns, where, fix)


def _chat(turns: list[dict[str, Any]], where: str, fix: str) -> Chat:
    if not any(t["role"] == "assistant" for t in turns):
        raise UsageError("--dataset", where, "has no assistant turn, so nothing to learn from it",
                         fix)
    return Chat(messages=tuple(turns), where=where)


PARSERS = {
    DataFormat.ALPACA: _alpaca,
    DataFormat.SHAREGPT: _sharegpt,
    DataFormat.MESSAGES: _messages,
    DataFormat.TEXT: _text,
    DataFormat.PROMPT_COMPLETION: _prompt_completion,
}
