"""mgft-train: fine-tune a causal LM with LoRA (or fully) under DDP, on CPU/gloo or GPU/nccl.

    torchrun --nproc-per-node 2 -m mgft_train --model=DIR --dataset=FILE --output=DIR ...

Exit codes: 0 done; 2 bad input (one line on stderr naming the flag, the value and the fix).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mgft.envcontract import CommEnv, DistEnv, LaunchEnv
from mgft.train_args import from_argv

from mgft_train.checks import check_inputs
from mgft_train.errors import UsageError

PROG = "mgft-train"


def main(argv: Sequence[str] | None = None) -> int:
    spec = from_argv(sys.argv[1:] if argv is None else argv, prog=PROG)  # exits 2 on bad flags
    env = DistEnv.from_env()
    if CommEnv.from_env().preflight:  # mgft submit --preflight: check the node first
        from mgft.doctor.preflight import run_preflight

        if code := run_preflight():
            return code
    # Everything that can be wrong with the inputs is found before the process group exists:
    # a rank that fails after rendezvous leaves the others waiting in a collective.
    try:
        check_inputs(spec)
        from mgft_train import data, distributed, model  # torch: after the cheap checks

        tokenizer = model.load_tokenizer(spec.model)
        dataset = data.prepare(spec, tokenizer)  # every bad row, and a missing chat template
        device = distributed.resolve_device(LaunchEnv.from_env(), env)
    except UsageError as err:
        if env.is_main:
            print(f"{PROG}: {err}", file=sys.stderr)
        return 2

    from mgft_train import loop, metrics, parallel, save

    _quiet_hf()
    ctx = distributed.init(env, device)
    try:
        net = model.load_model(spec, ctx.device)
        trainable, total = model.count_params(net)
        loader = data.make_loader(dataset.examples,
                                  micro_batch=spec.micro_batch, pad_id=tokenizer.pad_token_id,
                                  rank=ctx.rank, world_size=ctx.world_size, seed=spec.seed,
                                  pin_memory=ctx.device.type == "cuda",
                                  pack_len=spec.seq_len if spec.packing else None,
                                  flat=data.flat_rows(net))
        if ctx.is_main:
            print(data.summary(dataset, loader), flush=True)
        wrapped = parallel.wrap(net, spec.strategy, ctx)
        result = loop.train(wrapped, loader, spec, ctx)
        if ctx.is_main:
            saved = save.save(parallel.unwrap(wrapped), tokenizer, spec.output, spec.tuning)
            report = metrics.collect(spec, ctx, wrapped, result, trainable, total)
            metrics.write(report, spec.output)
            print(metrics.summary(report, saved), flush=True)
    except BaseException:
        distributed.abandon(ctx)
        raise
    distributed.teardown(ctx)
    return 0


def _quiet_hf() -> None:
    """Per-rank "Loading weights" bars repeat N times in a job log and say nothing new."""
    from transformers.utils import logging

    logging.disable_progress_bar()
