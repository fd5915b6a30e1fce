"""Download-free assets for tests, demos and benchmarks: a random-init Llama, its tokenizer,
and data.

    python -m mgft_train.demo_assets --out DIR [--rows N] [--seed S] [--force]
        [--format alpaca|sharegpt|messages|text|prompt_completion]
        [--file-type jsonl|json|parquet|disk] [--chat-template chatml|llama3]

DIR/model/ holds a 2-layer Llama (about 100k parameters) and a byte-level BPE tokenizer trained
on the task's own text; DIR/data.jsonl holds rows of a word-list task a LoRA learns within a
few dozen steps, as alpaca rows by default (--format, --file-type: the same task in another
format or file; `disk` is a save_to_disk directory DIR/data). --chat-template stores a
built-in chat template in the tokenizer, which has none otherwise. Same seed, same bytes.

    python -m mgft_train.demo_assets --out DIR --preset llama-1b [--weights]

Presets: `tiny` (default) is the 2-layer Llama above, with its weights. `llama-1b` is a
1.06B-parameter Llama-architecture config (hidden 2048, 18 layers, 32 heads, MLP 5632, vocab
32000) with rows of about 500 tokens (for --seq-len 512). It writes only config.json, for
`mgft-train --random-init` to build on the GPU, unless --weights saves random weights too
(which --tuning qlora needs: it quantizes weights as it loads them).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgft_train import console
from mgft_train.data import Row, render_prompt
from mgft_train.data.templates import BUILTIN_CHAT_TEMPLATES

WORDS = ("red", "blue", "green", "black", "white", "cat", "dog", "fox", "owl", "bee",
         "one", "two", "three", "four", "sun", "moon")
# Three small tasks over the same words: the responses reuse the input's words, so a model
# learns quickly which tokens can follow "### Response:" and the loss falls clearly.
TASKS = {
    "Reverse the words.": lambda ws: list(reversed(ws)),
    "Repeat the words.": lambda ws: list(ws),
    "Sort the words.": sorted,
}
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
VOCAB_SIZE = 512
FORMATS = ("alpaca", "sharegpt", "messages", "text", "prompt_completion")
FILE_TYPES = {"jsonl": "data.jsonl", "json": "data.json", "parquet": "data.parquet",
              "disk": "data"}


@dataclass(frozen=True)
class Preset:
    words: tuple[int, int]  # words per row's input: its length in tokens is about twice that
    weights: bool  # saved by default
    config: dict[str, Any]


PRESETS = {
    "tiny": Preset(words=(3, 6), weights=True, config=dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512,
        # LoRA leaves lm_head frozen, and at the usual 0.02 its 64-wide rows cap every logit
        # near 1: the loss could not fall far below uniform. 0.1 lets it drop by ~2 nats.
        initializer_range=0.1)),
    # TinyLlama's shape with 18 layers and full attention heads: 1.06B parameters.
    "llama-1b": Preset(words=(220, 270), weights=False, config=dict(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=18,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048)),
}


def make_rows(n: int, seed: int, words: tuple[int, int] = (3, 6)) -> list[Row]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        instruction = rng.choice(sorted(TASKS))
        count = rng.randint(*words)
        # Short rows use distinct words; long ones must repeat some.
        words_ = rng.sample(WORDS, count) if count <= len(WORDS) else rng.choices(WORDS, k=count)
        rows.append(Row(instruction=instruction, input=" ".join(words_),
                        output=" ".join(TASKS[instruction](words_))))
    return rows


def train_tokenizer(corpus: list[str]):
    """Byte-level BPE, so any text encodes; BOS is added the way Llama tokenizers add it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD)


def make_config(tokenizer, preset: Preset):
    from transformers import LlamaConfig

    fields = {"vocab_size": len(tokenizer), **preset.config}
    return LlamaConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **fields)


def make_model(config, seed: int):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    # A billion parameters initialise in seconds on a GPU and in a minute on a CPU.
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config)
    return model if config.hidden_size < 1024 else model.to(torch.bfloat16)


def build(out: Path, *, rows: int = 256, seed: int = 0, force: bool = False,
          data_format: str = "alpaca", file_type: str = "jsonl",
          chat_template: str | None = None, preset: str = "tiny",
          weights: bool | None = None) -> Path:
    """Write DIR/model/ and the dataset; returns the dataset's path."""
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} is not empty; pass --force to overwrite, or pick a new --out")
    chosen = PRESETS[preset]
    data_rows = make_rows(rows, seed, chosen.words)
    corpus = [render_prompt(r) + r.output for r in data_rows]
    tokenizer = train_tokenizer(corpus)
    if chat_template is not None:
        tokenizer.chat_template = BUILTIN_CHAT_TEMPLATES[chat_template]
    config = make_config(tokenizer, chosen)

    model_dir = out / "model"
    if model_dir.exists():  # --force: no stale shards from an older build
        shutil.rmtree(model_dir)
    if chosen.weights if weights is None else weights:
        make_model(config, seed).save_pretrained(model_dir)
    else:
        config.save_pretrained(model_dir)  # config only: mgft-train --random-init builds it
    tokenizer.save_pretrained(model_dir)
    return write_data(out / FILE_TYPES[file_type], [as_format(r, data_format) for r in data_rows],
                      file_type)


def as_format(row: Row, data_format: str) -> dict:
    """The same sample in each format the trainer reads."""
    question = f"{row.instruction}\n{row.input}"
    if data_format == "alpaca":
        return {"instruction": row.instruction, "input": row.input, "output": row.output}
    if data_format == "sharegpt":
        return {"conversations": [{"from": "human", "value": question},
                                  {"from": "gpt", "value": row.output}]}
    if data_format == "messages":
        return {"messages": [{"role": "user", "content": question},
                             {"role": "assistant", "content": row.output}]}
    if data_format == "text":
        return {"text": render_prompt(row) + row.output}
    if data_format == "prompt_completion":
        return {"prompt": render_prompt(row), "completion": row.output}
    raise ValueError(f"unknown format {data_format!r}; use one of {', '.join(FORMATS)}")


def write_data(path: Path, records: list[dict], file_type: str) -> Path:
    if file_type == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif file_type == "json":
        path.write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    else:
        import datasets

        datasets.disable_progress_bars()
        table = datasets.Dataset.from_list(records)
        if file_type == "parquet":
            table.to_parquet(str(path))
        else:
            if path.exists():
                shutil.rmtree(path)
            table.save_to_disk(str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgft_train.demo_assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="directory to write into")
    parser.add_argument("--rows", type=int, default=256, help="alpaca rows (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and weights")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    parser.add_argument("--format", choices=FORMATS, default="alpaca",
                        help="dataset format (default alpaca)")
    parser.add_argument("--file-type", choices=sorted(FILE_TYPES), default="jsonl",
                        help="dataset file (default jsonl; disk: a save_to_disk directory)")
    parser.add_argument("--chat-template", choices=sorted(BUILTIN_CHAT_TEMPLATES),
                        help="store this built-in chat template in the tokenizer")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="model size and row length (default tiny)")
    parser.add_argument("--weights", action=argparse.BooleanOptionalAction, default=None,
                        help="save random weights (default: tiny yes, llama-1b no)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows {args.rows}: must be at least 1")
    try:
        data = build(args.out, rows=args.rows, seed=args.seed, force=args.force,
                     data_format=args.format, file_type=args.file_type,
                     chat_template=args.chat_template, preset=args.preset, weights=args.weights)
    except FileExistsError as err:
        console.err(f"mgft_train.demo_assets: --out {err}")
        return 2
    console.out(f"model and tokenizer: {args.out / 'model'}")
    console.out(f"dataset ({args.rows} {args.format} rows): {data}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
