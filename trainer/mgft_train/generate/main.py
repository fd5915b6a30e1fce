"""mgft-generate: batch generation, data-parallel over the job's processes, resumable.

    torchrun --nproc-per-node 4 -m mgft_train.generate --model=DIR --prompts=FILE --output=DIR

Each rank takes every world_size-th prompt that no earlier run finished, appends its results
to its own shard, and rank 0 merges all shards into <output>/generations.jsonl in input
order. Rerun with the same --output after a crash: finished prompts are skipped.

Exit codes: 0 done; 2 bad input (one line naming the flag, the value and the fix).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgft.contract.env import DistEnv, LaunchEnv
from mgft.contract.exitcodes import USAGE
from mgft.contract.generate import GenerateArgs, parse

from mgft_train import console, quiet
from mgft_train.errors import UsageError
from mgft_train.progress import format_eta

if TYPE_CHECKING:  # distributed imports torch: not before the flags are checked
    from mgft_train.distributed import Dist

PROG = "mgft-generate"
# Ranks wait for the slowest shard before merging; that can take hours, and gloo's default
# 30-minute timeout would fail a healthy job. A rank that dies still ends the job: torchrun
# stops the others.
GROUP_TIMEOUT = timedelta(days=7)


def main(argv: Sequence[str] | None = None) -> int:
    quiet.install()
    args = parse(sys.argv[1:] if argv is None else argv, prog=PROG)  # exits 2 on bad flags
    env = DistEnv.from_env()
    # Everything that can be wrong with the inputs is found before any rank waits on another.
    try:
        check_inputs(args)
        from mgft_train.distributed import resolve_device
        from mgft_train.generate import decode, prompts, store

        tokenizer = decode.load_tokenizer(args)
        rows = prompts.load_rows(args.prompts)
        prompts.check_template(tokenizer, args.model, rows, args.chat_template)
        items = prompts.encode(rows, tokenizer, args.chat_template)
        settings = settings_of(args, store.file_sha256(args.prompts), len(items))
        store.check_settings(args.output, settings)
        device = resolve_device(LaunchEnv.from_env(), env)
    except UsageError as err:
        console.err(err.report(PROG, env.rank))
        return USAGE
    _quiet_hf()
    from mgft_train import distributed

    # A gloo group for the few barriers: generation itself never communicates, so it needs
    # no NCCL communicator (nor its GPU memory).
    ctx = distributed.init(env, device, backend="gloo", timeout=GROUP_TIMEOUT)
    try:
        run(args, device, tokenizer, items, settings, ctx)
    except BaseException as err:
        distributed.abandon(ctx)
        if isinstance(err, UsageError):  # found while generating (--batch-size 1 too big)
            console.err(f"{PROG}: rank {env.rank}: {err}")
            return USAGE
        raise
    distributed.teardown(ctx)
    return 0


def check_inputs(args: GenerateArgs) -> None:
    fix = "pass a local model directory holding config.json, weights and tokenizer files"
    if not Path(args.model, "config.json").is_file():
        raise UsageError("--model", args.model, "no config.json there", fix)
    if not Path(args.prompts).is_file():
        raise UsageError("--prompts", args.prompts, "file not found",
                         "pass an existing .jsonl file of prompts")
    if args.adapter is not None and not Path(args.adapter, "adapter_config.json").is_file():
        raise UsageError("--adapter", args.adapter, "no adapter_config.json there",
                         "pass the adapter directory a LoRA run saved (<output>/adapter)")
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise UsageError("--output", args.output, "exists and is not a directory",
                         "pick a directory for the results")


def settings_of(args: GenerateArgs, prompts_sha256: str, count: int) -> dict[str, Any]:
    """What decides the results; world size and batch size do not (greedily, at least)."""
    return {"model": os.path.realpath(args.model),
            "adapter": os.path.realpath(args.adapter) if args.adapter else None,
            "prompts_sha256": prompts_sha256, "prompts": count,
            "max_new_tokens": args.max_new_tokens, "min_new_tokens": args.min_new_tokens,
            "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
            "chat_template": args.chat_template}


def run(args: GenerateArgs, device: Any, tokenizer: Any, items: list,
        settings: dict[str, Any], ctx: Dist) -> None:
    from mgft_train import distributed
    from mgft_train.generate import decode, prompts, store

    rank, world = ctx.rank, ctx.world_size
    done = store.read_done(args.output)  # every rank, before any rank appends
    if rank == 0:
        store.write_settings(args.output, settings)
    distributed.barrier(ctx)
    todo = [p for p in items if p.index not in done]
    if not todo:  # the same on every rank: all read `done` before the barrier
        if rank == 0:
            _nothing_to_do(args.output, items)
        return
    mine = prompts.longest_first(todo[rank::world])
    start = time.perf_counter()
    model = decode.load_model(args, device)
    loaded = time.perf_counter()
    eos = decode.stop_ids(model, tokenizer)
    config = decode.generation_config(args, tokenizer, eos)
    writer = store.ShardWriter(args.output, rank)
    tokens = finished = 0
    batch_s: list[float] = []  # each batch's time: the first one pays the warm-up

    def finish(records: list[dict[str, Any]], seconds: float) -> None:
        nonlocal tokens, finished
        writer.append(records)
        batch_s.append(seconds)
        tokens += sum(r["completion_tokens"] for r in records)
        finished += len(records)
        if rank == 0:  # rank 0's shard stands for all: shards differ by at most one prompt
            elapsed = time.perf_counter() - loaded
            eta = format_eta(elapsed / finished * (len(mine) - finished))
            console.out(f"{PROG}: rank 0: {finished}/{len(mine)} prompts tok/s "
                        f"{tokens / elapsed:.0f} eta {eta}")

    def note(text: str) -> None:
        console.err(f"{PROG}: rank {rank}: {text}")

    try:
        used = decode.generate_all(model, tokenizer, config, eos, mine, args.batch_size,
                                   args.seed, finish, note)
    finally:
        writer.close()
    mine_stats = {"rank": rank, "prompts": len(mine), "completion_tokens": tokens,
                  "load_s": loaded - start, "generate_s": time.perf_counter() - loaded,
                  "batch_s": batch_s, "batch_size": used,
                  "peak_memory_bytes": _peak_memory(device)}
    stats: list[Any] = distributed.gather(mine_stats, ctx)
    if rank == 0:
        path = store.merge(args.output, items)
        report = metrics(args, stats, device, len(items), len(done), ctx.backend)
        store.write_metrics(args.output, report)
        console.out(f"{PROG}: {len(items)} prompts ({report['generated_now']} generated now, "
                    f"{len(done)} already done) on {world} x {device.type}; "
                    f"{report['completion_tokens']} tokens in {report['generate_s']:.1f} s "
                    f"({report['tokens_per_s']:.0f} tok/s); wrote {path}")


def _nothing_to_do(output: str, items: list) -> None:
    """A rerun of a finished job loads no model and keeps what the finished run wrote."""
    from mgft_train.generate import store

    path = Path(output, store.RESULT)
    if not path.is_file():  # every shard complete, the merge itself cut short
        store.merge(output, items)
    console.out(f"{PROG}: all {len(items)} prompts already done; nothing to generate. "
                f"Results: {path}")


def metrics(args: GenerateArgs, stats: list[dict[str, Any]], device: Any, total: int,
            skipped: int, backend: str) -> dict[str, Any]:
    slowest = max(s["generate_s"] for s in stats)
    tokens = sum(s["completion_tokens"] for s in stats)
    return {"world_size": len(stats), "backend": backend,
            "device": device.type, "prompts": total, "already_done": skipped,
            "generated_now": sum(s["prompts"] for s in stats), "completion_tokens": tokens,
            "generate_s": slowest, "tokens_per_s": tokens / slowest if slowest > 0 else 0.0,
            "load_s": max(s["load_s"] for s in stats),
            "peak_memory_bytes": max(s["peak_memory_bytes"] for s in stats),
            "ranks": stats, "args": dataclasses.asdict(args)}


def _peak_memory(device: Any) -> int:
    from mgft_train.memory import device_peak_bytes

    return int(device_peak_bytes(device))


def _quiet_hf() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
