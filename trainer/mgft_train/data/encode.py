"""Samples → token ids and labels: the loss mask, and the --seq-len policy for long samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mgft.spec.job import Overlong

from mgft_train.data.templates import Sample

IGNORE = -100  # torch cross_entropy's default ignore_index


@dataclass(frozen=True, slots=True)
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True, kw_only=True, slots=True)
class EncodeStats:
    samples: int
    truncated: int  # cut to seq_len (and kept)
    dropped_long: int  # longer than seq_len, with --overlong drop
    dropped_untrained: int  # no trained token left (truncation took the whole response)
    tokens: int
    trained_tokens: int


def encode_samples(samples: Sequence[Sample], tokenizer: Any, seq_len: int,
           overlong: Overlong = Overlong.TRUNCATE) -> tuple[list[Example], EncodeStats]:
    """Tokenize each segment on its own, so the label mask falls exactly on the boundary
    (tokenizing the joined text can merge tokens across it).

    Every example's first label is IGNORE: nothing predicts the first token, and when samples
    are packed the previous sample's last token must not learn to predict it.
    """
    pieces = _tokenize_segments(samples, tokenizer)
    eos = tokenizer.eos_token_id
    examples: list[Example] = []
    truncated = dropped_long = dropped_untrained = 0
    for sample, ids_per_segment in zip(samples, pieces, strict=True):
        ids: list[int] = []
        labels: list[int] = []
        for (_, trained), seg_ids in zip(sample.segments, ids_per_segment, strict=True):
            ids += seg_ids
            labels += seg_ids if trained else [IGNORE] * len(seg_ids)
        if sample.eos:
            ids.append(eos)
            labels.append(eos if sample.segments[-1][1] else IGNORE)
        if labels:
            labels[0] = IGNORE
        if len(ids) > seq_len:
            if overlong is Overlong.DROP:
                dropped_long += 1
                continue
            truncated += 1
            ids, labels = ids[:seq_len], labels[:seq_len]
        if all(t == IGNORE for t in labels):
            dropped_untrained += 1
            continue
        examples.append(Example(input_ids=ids, labels=labels))
    stats = EncodeStats(samples=len(samples), truncated=truncated, dropped_long=dropped_long,
                        dropped_untrained=dropped_untrained,
                        tokens=sum(len(e.input_ids) for e in examples),
                        trained_tokens=sum(t != IGNORE for e in examples for t in e.labels))
    return examples, stats


def _tokenize_segments(samples: Sequence[Sample], tokenizer: Any) -> list[list[list[int]]]:
    """Token ids per segment per sample, in two batched calls (a fast tokenizer spreads a batch
    over its threads): first segments of samples that want BOS, and everything else."""
    with_special: list[str] = []
    plain: list[str] = []
    for sample in samples:
        for k, (text, _) in enumerate(sample.segments):
            (with_special if k == 0 and sample.bos else plain).append(text)
    special_ids = iter(_ids(tokenizer, with_special, True))
    plain_ids = iter(_ids(tokenizer, plain, False))
    return [[next(special_ids if k == 0 and s.bos else plain_ids) for k in range(len(s.segments))]
            for s in samples]


def _ids(tokenizer: Any, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
