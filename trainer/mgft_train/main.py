"""mgft-train: fine-tune a causal LM (LoRA, QLoRA or full) under DDP, FSDP, ZeRO-1/2/3,
ZeRO-3 with offload, or naive model parallelism, on CPU/gloo or GPU/nccl.

    torchrun --nproc-per-node 2 -m mgft_train --model=DIR --dataset=FILE --output=DIR ...

Checkpoints go to <output>/checkpoints/step-NNNNNNNN/ every --save-every steps and at the
end (atomically; the last --keep-checkpoints are kept). Rerunning with the same argv and
--output resumes from the latest one; an --output holding a finished run (metrics.json) is
refused. With --eval-dataset or --eval-split, the held-out loss is measured every
--eval-every steps and at the end. At the end: the adapter (or model), the merged model with
--save-merged, metrics.json and loss.png. Every step is reported to --report-to's trackers
(TensorBoard events under <output>/tensorboard/ by default; mgft_train.tracking).

Exit codes (mgft.contract.exitcodes):
  0   done.
  2   bad input: one line on stderr naming the flag, the value and the fix (from each rank
      that found it; ranks other than 0 prefix it with "rank N:").
  75  preempted: SIGTERM or SIGUSR2 reached at least one rank; every rank finished the step,
      wrote a checkpoint under <output>/checkpoints and stopped. Rerun the same command to
      resume from it (Slurm requeue, Kubernetes restart, or by hand).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mgft.contract import exitcodes
from mgft.contract.argv import parse_train
from mgft.contract.env import CommEnv, DistEnv, LaunchEnv
from mgft.spec.job import Save, TrainSpec

from mgft_train import console, quiet, signals, tracking
from mgft_train.checks import check_inputs
from mgft_train.errors import UsageError

if TYPE_CHECKING:  # torch and transformers load after the flags are checked
    from transformers import PreTrainedTokenizerBase

    from mgft_train.data import Prepared
    from mgft_train.distributed import Dist

PROG = "mgft-train"


def main(argv: Sequence[str] | None = None) -> int:
    quiet.install()
    spec = parse_train(sys.argv[1:] if argv is None else argv, prog=PROG)  # exits 2 on bad flags
    env = DistEnv.from_env()
    if CommEnv.from_env().preflight:  # mgft submit --preflight: check the node first
        from mgft.doctor.preflight import run_preflight

        if code := run_preflight():
            return code
    signals.install()  # from here on, SIGTERM/SIGUSR2 mean "checkpoint and exit 75"
    # Everything that can be wrong with the inputs is found before the process group exists:
    # a rank that fails after rendezvous leaves the others waiting in a collective.
    try:
        resume_from = check_inputs(spec, env)
        tracking.check(spec)  # wandb or mlflow asked for and not installed
        from mgft_train import data, distributed, model  # torch: after the cheap checks

        tokenizer = model.load_tokenizer(spec.model)
        # every bad row, and a missing chat template; tokenized once into --data-cache
        dataset = data.load(spec, tokenizer, env.rank)
        device = distributed.resolve_device(LaunchEnv.from_env(), env)
    except UsageError as err:
        return _usage(err, env.rank)

    ctx = distributed.init(env, device)
    _quiet_hf()
    try:
        code = run(spec, ctx, env, tokenizer, dataset, resume_from)
    except UsageError as err:  # found only once the model is loaded (e.g. --lora-targets)
        distributed.abandon(ctx)
        return _usage(err, ctx.rank)
    except BaseException:
        distributed.abandon(ctx)
        raise
    distributed.teardown(ctx)
    return code


def run(spec: TrainSpec, ctx: Dist, env: DistEnv, tokenizer: PreTrainedTokenizerBase,
        dataset: Prepared, resume_from: Path | None) -> int:
    from mgft_train import (
        checkpoint,
        compiled,
        curves,
        data,
        evaluate,
        loop,
        memory,
        metrics,
        model,
        parallel,
        precision,
        reshard,
        save,
    )

    net = model.load_model(spec, ctx)
    loaded = model.describe(net)  # before FSDP or ZeRO-3 shard the weights away
    loader = data.make_loader(dataset.examples, micro_batch=spec.micro_batch,
                              pad_id=tokenizer.pad_token_id, rank=ctx.rank,
                              world_size=ctx.world_size, seed=spec.seed,
                              pin_memory=ctx.device.type == "cuda",
                              pack_len=spec.seq_len if spec.packing else None,
                              flat=data.flat_rows(net), packs=dataset.packs)
    if ctx.is_main:
        console.out(data.summary(dataset, loader))
        if blocks := compiled.count(net):  # the first steps will be slow: say why
            console.out(f"{PROG}: --compile blocks: {blocks} transformer blocks compile in the "
                        "first steps (about half a minute on a GPU host)")
    # The run's length, data start and schedule; on another number of processes than the
    # checkpoint's, mapped to this one (reshard.py).
    plan = reshard.plan(checkpoint.read_state(resume_from) if resume_from else None, spec,
                        ctx.world_size, loader.sampler.size)
    total = plan.total
    engine = parallel.apply(net, spec, ctx, total)
    skipped = checkpoint.skipped(spec.output)  # damaged ones newer than resume_from
    if skipped and ctx.is_main:
        console.out(f"{PROG}: skipping damaged checkpoint {'; '.join(skipped)}; falling back "
                    f"to {resume_from}")
    resume = checkpoint.load(engine, resume_from, ctx, plan) if resume_from else None
    if resume and ctx.is_main:
        console.out(f"{PROG}: resuming from {resume_from} (step {resume.step} of {total})")
        if plan.note:
            console.out(f"{PROG}: continuing on {ctx.world_size} processes (the checkpoint's "
                        f"run had {resume.world_size}): {plan.note}")

    held_out = evaluate.held_out(engine, dataset.eval, spec, ctx, pad_id=tokenizer.pad_token_id,
                                 flat=data.flat_rows(net))

    result = loop.train(engine, loader, spec, ctx, total=total, resume=resume,
                        evaluate=held_out)
    if result.preempted:
        signals.ignore()  # saved; a second SIGTERM (torchrun's, as peers exit) changes nothing
        if ctx.is_main:
            console.out(f"{PROG}: stopped by "
                        f"{'/'.join(result.signals) or 'a signal on another rank'}"
                        f" after step {result.steps} of {total}; {resumable(spec)}"
                        f" (exit {exitcodes.PREEMPTED})")
        return exitcodes.PREEMPTED

    reload_check_loss = evaluate.loss(
        engine, evaluate.reload_check_batches(dataset.examples, tokenizer.pad_token_id,
                                              spec.micro_batch), ctx)
    peaks = memory.peaks(engine.model, ctx)
    saved = save.save_final(engine, tokenizer, spec, ctx) if spec.save is not Save.NONE else {}
    if ctx.is_main:
        report = metrics.collect(spec, ctx, engine.model, result, loaded, peak_memory=peaks,
                                 reload_check_loss=reload_check_loss, eval_set=dataset.eval,
                                 saved=saved, restart_count=env.restart_count,
                                 precision=precision.describe(spec, engine))
        report["skipped_checkpoints"] = skipped
        report["data_cache"] = dataset.cache  # hit, waited, built or off, and how long
        curves.plot_loss(result.losses, spec.output, f"{report['strategy']} {spec.tuning.value}",
                         result.evals)
        metrics.write(report, spec.output)  # last: its presence marks the run finished
        console.out(metrics.summary(report))
    return exitcodes.OK


def resumable(spec: TrainSpec) -> str:
    from mgft_train import checkpoint

    if spec.save is not Save.CHECKPOINTS:
        return f"nothing to resume from (--save {spec.save.value})"
    return (f"checkpoint in {checkpoint.latest(spec.output)}; rerun the same command to "
            "resume")


def _usage(err: UsageError, rank: int) -> int:
    console.err(err.report(PROG, rank))
    return exitcodes.USAGE


def _quiet_hf() -> None:
    """Per-rank "Loading weights" and "Writing model shards" bars repeat N times in a job
    log and say nothing new."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    logging.disable_progress_bar()
    disable_progress_bars()
