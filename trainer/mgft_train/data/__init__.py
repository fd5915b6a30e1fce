"""Training data: file → rows → records of one format → token ids with a loss mask → batches.

    files.py      .jsonl/.json/.parquet/save_to_disk → rows, each named by file and line
    formats.py    format detection (or --data-format) and per-row validation
    templates.py  alpaca prompt, chat templates → segments marked trained or not
    encode.py     tokens, labels, and the --seq-len policy (--overlong)
    packing.py    several samples per sequence, attention kept inside each
    batches.py    collation, rank sharding, and what the model is given
    split.py      --eval-split: the rows held out for evaluation
    cache.py      all of the above done once, kept as numpy arrays (--data-cache)

`prepare` does everything up to token ids, for the training rows and the eval set
(--eval-dataset or --eval-split), so every bad row and a missing chat template fail before
any process group exists. `load` is `prepare` through the data cache (cache.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgft.spec.job import DataFormat, Overlong, TrainSpec
from torch.utils.data import DataLoader

from mgft_train.data.batches import (
    collate,
    label_tokens,
    make_loader,
    model_inputs,
    real_tokens,
)
from mgft_train.data.encode import IGNORE, EncodeStats, Example, encode_samples
from mgft_train.data.files import iter_rows
from mgft_train.data.formats import Parsed, Record, Row, parse
from mgft_train.data.packing import Pack, flat_rows
from mgft_train.data.split import split
from mgft_train.data.templates import render_prompt, resolve_chat_template, to_sample
from mgft_train.errors import UsageError

CHAT_FORMATS = frozenset({DataFormat.SHAREGPT, DataFormat.MESSAGES})
__all__ = ["IGNORE", "EvalSet", "Example", "Prepared", "Row", "collate", "encode", "flat_rows",
           "label_tokens", "load", "load_rows", "make_loader", "model_inputs", "prepare", "read",
           "real_tokens", "render_prompt", "summary"]


@dataclass(frozen=True, slots=True)
class EvalSet:
    """Held-out samples: none of them is in `Prepared.examples`."""

    examples: list[Example]
    source: str  # how the user named them: "--eval-dataset FILE" or "--eval-split F of FILE"
    stats: EncodeStats
    packs: Sequence[Pack] | None = None  # packed already (the data cache's), or packed later


@dataclass(frozen=True, slots=True)
class Prepared:
    examples: list[Example]  # what is trained on
    format: DataFormat
    source: str
    stats: EncodeStats
    last_turn_only: int  # conversations whose template allowed training the last turn only
    seq_len: int
    eval: EvalSet | None = None
    packs: Sequence[Pack] | None = None  # packed already (the data cache's), or packed later
    cache: dict[str, Any] | None = None  # what the data cache did (cache.load), for metrics


def read(dataset: str, data_format: DataFormat = DataFormat.AUTO) -> Parsed:
    """Every row of the file as a typed record; bad rows fail here, named by file and line."""
    return parse(iter_rows(dataset), data_format, dataset)


def prepare(spec: TrainSpec, tokenizer: Any) -> Prepared:
    parsed = read(spec.dataset, spec.data_format)
    records, held, held_format = parsed.records, None, parsed.format
    if spec.eval_split is not None:
        records, held = split(records, spec.eval_split, spec.seed, spec.dataset)
    elif spec.eval_dataset is not None:
        try:
            eval_parsed = read(spec.eval_dataset, spec.data_format)
        except UsageError as err:  # its rows are checked by the code that reads --dataset
            raise err.for_flag("--eval-dataset") from None
        held, held_format = eval_parsed.records, eval_parsed.format
    template = None
    if parsed.format in CHAT_FORMATS or held_format in CHAT_FORMATS:
        template = resolve_chat_template(tokenizer, spec.chat_template, spec.model)
    samples = [to_sample(r, tokenizer, template, spec.train_on_prompt) for r in records]
    examples, stats = encode_samples(samples, tokenizer, spec.seq_len, spec.overlong)
    if not examples:
        raise UsageError("--dataset", spec.dataset, _nothing_left(stats, spec),
                         f"raise --seq-len (now {spec.seq_len}) or use --overlong truncate")
    return Prepared(examples=examples, format=parsed.format, source=spec.dataset, stats=stats,
                    last_turn_only=sum(s.last_turn_only for s in samples), seq_len=spec.seq_len,
                    eval=None if held is None else _eval_set(held, spec, tokenizer, template))


def _eval_set(records: Sequence[Record], spec: TrainSpec, tokenizer: Any,
              template: str | None) -> EvalSet:
    """Encoded as the training rows are (prompt masking, --seq-len, --overlong), so that
    its loss is the training loss's measure, on other rows."""
    samples = [to_sample(r, tokenizer, template, spec.train_on_prompt) for r in records]
    examples, stats = encode_samples(samples, tokenizer, spec.seq_len, spec.overlong)
    if not examples:
        flag, value = (("--eval-split", spec.eval_split) if spec.eval_split is not None
                       else ("--eval-dataset", spec.eval_dataset))
        raise UsageError(flag, value, _nothing_left(stats, spec, "no eval sample left"),
                         f"raise --seq-len (now {spec.seq_len}) or use --overlong truncate")
    return EvalSet(examples=examples, source=eval_source(spec), stats=stats)


def eval_source(spec: TrainSpec) -> str:
    if spec.eval_split is not None:
        return f"--eval-split {spec.eval_split} of {Path(spec.dataset).name}"
    return f"--eval-dataset {Path(str(spec.eval_dataset)).name}"


def load(spec: TrainSpec, tokenizer: Any, rank: int = 0) -> Prepared:
    """`prepare`, from the data cache (built by the first process to get there) unless
    --data-cache none."""
    from mgft_train.data import cache

    return cache.load(spec, tokenizer, rank)


def load_rows(dataset: str) -> list[Record]:
    """The records of a file whose format is told from its first row."""
    return read(dataset).records


def encode(records: Sequence[Record], tokenizer: Any, seq_len: int, *,
           chat_template: str | None = None, train_on_prompt: bool = False,
           overlong: Overlong = Overlong.TRUNCATE) -> list[Example]:
    """Records → examples, as `prepare` makes them (for tests and tools holding records)."""
    samples = [to_sample(r, tokenizer, chat_template, train_on_prompt) for r in records]
    return encode_samples(samples, tokenizer, seq_len, overlong)[0]


def _nothing_left(stats: EncodeStats, spec: TrainSpec,
                  what: str = "no sample left to train on") -> str:
    return (f"{what}: of {stats.samples}, {stats.dropped_long} are longer "
            f"than --seq-len {spec.seq_len} (--overlong {spec.overlong.value}) and "
            f"{stats.dropped_untrained} have no response token within it")


def summary(data: Prepared, loader: DataLoader) -> str:
    """One line for rank 0's log: what was read, and what was cut, dropped and packed."""
    s = data.stats
    parts = [f"data: {s.samples} {data.format.value} rows from {Path(data.source).name}"]
    if s.truncated:
        parts.append(f"{s.truncated} truncated to --seq-len {data.seq_len}")
    if s.dropped_long:
        parts.append(f"{s.dropped_long} longer than --seq-len {data.seq_len} dropped")
    if s.dropped_untrained:
        parts.append(f"{s.dropped_untrained} dropped with no response token left")
    if data.last_turn_only:
        parts.append(f"{data.last_turn_only} trained on the last assistant turn only "
                     "(the chat template rewrites earlier turns)")
    parts.append(f"{len(data.examples)} samples, {s.tokens} tokens ({s.trained_tokens} trained)")
    items = loader.dataset
    if items and isinstance(items[0], tuple):  # packs are tuples of examples
        # = fill(items, seq_len): every example is in a pack, and this reads none of them
        full = s.tokens / (data.seq_len * len(items))
        parts.append(f"packed into {len(items)} sequences ({full:.0%} full)")
    if data.eval is not None:
        e = data.eval.stats
        parts.append(f"eval: {len(data.eval.examples)} held-out samples ({data.eval.source}), "
                     f"{e.trained_tokens} tokens scored")
    if data.cache is not None and data.cache["result"] != "off":
        parts.append(f"data cache {data.cache['result']} in {data.cache['seconds']:.1f} s "
                     f"({data.cache['dir']})")
    return "; ".join(parts)
