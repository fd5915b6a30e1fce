"""Packed vs padded micro-batches on one epoch of mixed-length instruction data.

Usage: python bench/data_packing.py [--rows N] [--seq-len L] [--micro-batch B]
       [--out bench/results/data_packing.json]

The tiny Llama (CPU, sdpa attention) does forward+backward over one epoch of alpaca rows whose
responses run from 3 to 120 words, once with one padded sample per row and once packed. Both
see the same samples and the same trained tokens; the table shows what packing saves: padding,
forward passes and wall time.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import torch
from mgft.spec.job import TrainSpec
from mgft_train import demo_assets as tiny
from mgft_train.data import flat_rows, label_tokens, make_loader, prepare, real_tokens
from mgft_train.data.formats import Row
from mgft_train.loop import loss_sum
from mgft_train.model import load_tokenizer


def mixed_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(tiny.WORDS) for _ in range(rng.randint(3, 120))]
        rows.append(tiny.as_format(Row(instruction="Repeat the words.", input=" ".join(words),
                                       output=" ".join(words)), "alpaca"))
    return rows


def epoch(model, loader) -> dict[str, float]:
    slots = tokens = trained = forwards = 0
    start = time.perf_counter()
    for batch in loader:
        loss_sum(model, batch).backward()
        slots += batch["input_ids"].numel()
        tokens += real_tokens(batch)
        trained += label_tokens(batch)
        forwards += 1
    elapsed = time.perf_counter() - start
    return {"forwards": forwards, "token_slots": slots, "real_tokens": tokens,
            "trained_tokens": trained, "padding": 1 - tokens / slots, "seconds": elapsed,
            "real_tokens_per_s": tokens / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("bench/results/data_packing.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    root = Path(tempfile.mkdtemp(prefix="mgft-bench-"))
    tiny.build(root, rows=64, seed=0)
    data = tiny.write_data(root / "mixed.jsonl", mixed_rows(args.rows, seed=1), "jsonl")
    tokenizer = load_tokenizer(str(root / "model"))
    spec = TrainSpec(model=str(root / "model"), dataset=str(data), seq_len=args.seq_len)
    examples = prepare(spec, tokenizer).examples
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(root / "model", local_files_only=True)
    results = {}
    for name, pack_len in (("padded", None), ("packed", args.seq_len)):
        loader = make_loader(examples, micro_batch=args.micro_batch,
                             pad_id=tokenizer.pad_token_id, rank=0, world_size=1, seed=0,
                             pack_len=pack_len, flat=flat_rows(model))
        results[name] = epoch(model, loader)

    print(f"{'':8}{'forwards':>10}{'slots':>10}{'padding':>9}{'trained':>9}{'s':>7}{'tok/s':>8}")
    for name, r in results.items():
        print(f"{name:8}{r['forwards']:>10}{r['token_slots']:>10}{r['padding']:>9.1%}"
              f"{r['trained_tokens']:>9}{r['seconds']:>7.1f}{r['real_tokens_per_s']:>8.0f}")
    speedup = results["padded"]["seconds"] / results["packed"]["seconds"]
    print(f"packed/padded speedup: {speedup:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": platform.machine(), "torch": torch.__version__, "rows": args.rows,
        "seq_len": args.seq_len, "micro_batch": args.micro_batch, "results": results,
        "speedup": speedup}, indent=2) + "\n")


if __name__ == "__main__":
    main()
