"""Prompts JSONL → the exact text and token ids each prompt sends to the model.

A row is one of:
- {"prompt": "..."}: the text as is (with --chat-template: one user message);
- {"messages": [{"role": ..., "content": ...}, ...]}: always through the chat template;
- {"instruction": "...", "input": "..."}: the training prompt format (mgft_train.data), so a
  model fine-tuned by mgft sees what it was trained on (with --chat-template: one user message).
Other keys are kept and come back under "input" in the results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgft_train.data import Row, render_prompt
from mgft_train.errors import UsageError

FIX = ("each line must be a JSON object with 'prompt' (text), 'messages' (a list of "
       "{'role', 'content'}) or 'instruction' with optional 'input'")


@dataclass(frozen=True, slots=True)
class Prompt:
    index: int  # 0-based position among the file's non-empty lines: the output order
    row: dict[str, Any]
    text: str
    ids: list[int]


def load_rows(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for every non-empty line, all validated before any work starts."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                where = f"{path}:{lineno}"
                rows.append((where, _parse(line, where)))
    if not rows:
        raise UsageError("--prompts", path, "no prompts in the file", FIX)
    return rows


def _parse(line: str, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise UsageError("--prompts", where, f"invalid JSON: {err.msg}", FIX) from None
    if not isinstance(row, dict):
        raise UsageError("--prompts", where, f"a JSON {type(row).__name__}, not an object", FIX)
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in messages):
            raise UsageError("--prompts", where, "'messages' is not a non-empty list of "
                             "{'role': str, 'content': str}", FIX)
    elif "prompt" in row:
        if not isinstance(row["prompt"], str):
            raise UsageError("--prompts", where, "'prompt' is not a string", FIX)
    elif "instruction" in row:
        if not isinstance(row["instruction"], str) or not isinstance(row.get("input", ""), str):
            raise UsageError("--prompts", where, "'instruction' and 'input' must be strings", FIX)
    else:
        raise UsageError("--prompts", where, "no 'prompt', 'messages' or 'instruction' key", FIX)
    return row


def needs_template(rows: list[tuple[str, dict[str, Any]]], chat_template: bool) -> str | None:
    """Where the first row that needs a chat template is, if any does."""
    if chat_template:
        return rows[0][0]
    return next((where for where, row in rows if "messages" in row), None)


def check_template(tokenizer: Any, model: str, rows: list[tuple[str, dict[str, Any]]],
                   chat_template: bool) -> None:
    where = needs_template(rows, chat_template)
    if where is None or getattr(tokenizer, "chat_template", None):
        return
    if chat_template:
        raise UsageError("--chat-template", model, "the tokenizer has no chat template (no "
                         "chat_template in its tokenizer_config.json)",
                         "use a chat model's tokenizer, or drop --chat-template to send the "
                         "prompts as plain text")
    raise UsageError("--prompts", where, "a 'messages' row needs a chat template and the "
                     f"tokenizer of {model} has none",
                     "send 'prompt' rows instead, or use a chat model's tokenizer")


def _user_text(row: dict[str, Any]) -> str:
    if "prompt" in row:
        return row["prompt"]
    return row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")


def render(row: dict[str, Any], tokenizer: Any, chat_template: bool, where: str
           ) -> tuple[str, bool]:
    """(text, whether the chat template made it). A template adds its own special tokens."""
    if "messages" in row or chat_template:
        messages = row.get("messages") or [{"role": "user", "content": _user_text(row)}]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
        except Exception as err:  # the template's own jinja raises on rows it cannot render
            raise UsageError("--prompts", where, f"the chat template rejected this row ({err})",
                             FIX) from None
        return text, True
    if "prompt" in row:
        return row["prompt"], False
    return render_prompt(Row(instruction=row["instruction"], output="",
                             input=row.get("input", ""))), False


def encode(rows: list[tuple[str, dict[str, Any]]], tokenizer: Any,
           chat_template: bool) -> list[Prompt]:
    prompts = []
    for index, (where, row) in enumerate(rows):
        text, templated = render(row, tokenizer, chat_template, where)
        # Plain prompts get the tokenizer's BOS, as in training (mgft_train.data.encode).
        ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
        if not ids:
            raise UsageError("--prompts", where, "the prompt encodes to no tokens", FIX)
        prompts.append(Prompt(index=index, row=row, text=text, ids=ids))
    return prompts


def longest_first(prompts: list[Prompt]) -> list[Prompt]:
    """The order a rank generates its prompts in: batches of similar length pad less, and an
    out-of-memory shows up in the first batch (ties by input order, so runs repeat)."""
    return sorted(prompts, key=lambda p: (-len(p.ids), p.index))
