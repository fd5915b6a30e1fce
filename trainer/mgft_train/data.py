"""Alpaca jsonl → tokenized examples → padded, rank-sharded micro-batches.

Loss is taken on the response only: prompt tokens and padding carry label IGNORE.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from mgft_train.errors import UsageError

IGNORE = -100  # torch cross_entropy's default ignore_index
PROMPT_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
PROMPT_NO_INPUT = "### Instruction:\n{instruction}\n\n### Response:\n"
ROW_FIX = "each line must be a JSON object with string 'instruction', optional 'input', 'output'"


@dataclass(frozen=True, slots=True)
class Row:
    instruction: str
    output: str
    input: str = ""


@dataclass(frozen=True, slots=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def load_rows(path: str | Path) -> list[Row]:
    """Read and validate every row up front, so a bad line 90% in fails before training."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                rows.append(_parse_row(line, f"{path}:{lineno}"))
    if not rows:
        raise UsageError("--dataset", path, "no rows in the file", ROW_FIX)
    return rows


def _parse_row(line: str, where: str) -> Row:
    # Alpaca's own release is one .json array; say so rather than only "not an object".
    hint = " (a .json array? write one object per line)" if line.lstrip()[:1] == "[" else ""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise UsageError("--dataset", where, f"invalid JSON: {err.msg}{hint}", ROW_FIX) from None
    if not isinstance(obj, dict):
        raise UsageError("--dataset", where,
                         f"row is a JSON {type(obj).__name__}, not an object{hint}", ROW_FIX)
    for key in ("instruction", "output"):
        if key not in obj:
            raise UsageError("--dataset", where, f"missing key {key!r}", ROW_FIX)
    for key in ("instruction", "input", "output"):
        if key in obj and not isinstance(obj[key], str):
            raise UsageError("--dataset", where,
                             f"key {key!r} is a {type(obj[key]).__name__}, not a string", ROW_FIX)
    return Row(instruction=obj["instruction"], output=obj["output"], input=obj.get("input", ""))


def render_prompt(row: Row) -> str:
    template = PROMPT_WITH_INPUT if row.input else PROMPT_NO_INPUT
    return template.format(instruction=row.instruction, input=row.input)


def encode(rows: Sequence[Row], tokenizer: Any, seq_len: int) -> list[Example]:
    """Tokenize prompt and response separately, so the label mask falls exactly on the boundary
    (tokenizing the joined text can merge tokens across it).

    The prompt gets the tokenizer's own special tokens (BOS where the model uses one); the
    response gets EOS so the model learns to stop. Truncation cuts the end: a response longer
    than seq_len loses its tail and EOS.
    """
    prompts = tokenizer([render_prompt(r) for r in rows], add_special_tokens=True)["input_ids"]
    responses = tokenizer([r.output for r in rows], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    examples = []
    for prompt, response in zip(prompts, responses, strict=True):
        response = [*response, eos]
        ids = (prompt + response)[:seq_len]
        labels = ([IGNORE] * len(prompt) + response)[:seq_len]
        examples.append(Example(input_ids=ids, labels=labels))
    return examples


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example in this batch (not to seq_len: padding is wasted work)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["attention_mask"].sum())


def label_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that are predicted: position t predicts labels[t + 1], so the first never counts."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def make_loader(examples: Sequence[Example], *, micro_batch: int, pad_id: int, rank: int,
                world_size: int, seed: int, pin_memory: bool = False) -> DataLoader:
    """Each rank sees its own 1/world_size of the data, reshuffled every epoch (set_epoch).

    DistributedSampler pads with repeated samples so every rank has the same number of
    batches; unequal counts would leave one rank waiting forever in an all-reduce.
    """
    sampler = DistributedSampler(examples, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed, drop_last=False)
    return DataLoader(list(examples), batch_size=micro_batch, sampler=sampler,
                      collate_fn=partial(collate, pad_id=pad_id), pin_memory=pin_memory)
