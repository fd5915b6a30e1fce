"""Time one process's decode batches the way `mgft generate` runs them (its longest-first
order and its batch loop, `decode.generate_all`), to see what a batch costs: alone or beside
other processes, by batch size, with or without a change.

    python bench/generate_probe.py MODEL_DIR PROMPTS.jsonl OUT.json [--batch-size 32]
        [--batches 10] [--liger] [--reserve-gib 16] [--start-with N --start-dir DIR]

Prompts go longest first, as each rank orders its shard; every prompt generates exactly 128
new tokens. `--start-with N` waits (up to 90 s) until N processes have loaded their model, so
concurrent copies decode at the same time. `bench/generate_probe.sh` runs the comparisons in
`bench/results/generate-probe.json`; those were taken with an earlier copy of this script that
read the same settings from PROBE_* variables.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from mgft.contract.generate import parse
from mgft_train.generate import decode, prompts


def wait_for_peers(start_dir: Path, count: int) -> None:
    (start_dir / f"ready-{os.getpid()}").touch()
    deadline = time.time() + 90
    while len(list(start_dir.iterdir())) < count and time.time() < deadline:
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("prompts", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--liger", action="store_true",
                        help="Liger's RMSNorm, SwiGLU and RoPE kernels on the model")
    parser.add_argument("--reserve-gib", type=float, default=0,
                        help="grow the CUDA caching allocator by this much before decoding")
    parser.add_argument("--start-with", type=int, default=0)
    parser.add_argument("--start-dir", type=Path, default=None)
    opts = parser.parse_args()

    phases: dict[str, float] = {}
    start = time.perf_counter()
    args = parse([f"--model={opts.model}", f"--prompts={opts.prompts}", "--output=unused",
                      f"--batch-size={opts.batch_size}", "--max-new-tokens=128",
                      "--min-new-tokens=128"], prog="generate_probe")
    tokenizer = decode.load_tokenizer(args)
    items = prompts.encode(prompts.load_rows(args.prompts), tokenizer, args.chat_template)
    ordered = prompts.longest_first(items)
    device = torch.device("cuda", 0)
    torch.zeros(1, device=device)
    torch.cuda.synchronize()
    phases["cuda_init"] = time.perf_counter() - start
    model = decode.load_model(args, device)
    torch.cuda.synchronize()
    phases["load"] = time.perf_counter() - start - phases["cuda_init"]
    eos = decode.stop_ids(model, tokenizer)
    config = decode.generation_config(args, tokenizer, eos)
    if opts.liger:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model, rms_norm=True, swiglu=True, rope=True,
                                        cross_entropy=False, fused_linear_cross_entropy=False)
    if opts.reserve_gib:
        began = time.perf_counter()
        block = torch.empty(int(opts.reserve_gib * 2**30), dtype=torch.uint8, device=device)
        del block
        phases["reserve"] = time.perf_counter() - began
    if opts.start_with:
        wait_for_peers(opts.start_dir, opts.start_with)
    batch_s: list[float] = []
    size = decode.generate_all(model, tokenizer, config, eos,
                               ordered[:opts.batch_size * opts.batches], opts.batch_size,
                               args.seed, lambda _records, seconds: batch_s.append(seconds),
                               print)
    result = {"batch_size": size, "batch_s": batch_s, "phases": phases,
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "liger": opts.liger,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "cuda_module_loading": os.environ.get("CUDA_MODULE_LOADING"),
              "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF")}
    opts.out.write_text(json.dumps(result, indent=1) + "\n")
    print(opts.out, {k: round(v, 2) for k, v in phases.items()},
          [round(s, 2) for s in batch_s])


if __name__ == "__main__":
    main()
