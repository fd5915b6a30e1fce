"""`mgft plan`: its options, and the table (or JSON) it prints.

Options that are also job options (--micro-batch, --gpus, ...) take their type, limits, help
and default from the job spec, so `mgft plan` and `mgft submit` read a value the same way.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable
from typing import Any

import click

from mgft.plan.memory import DTYPE_BYTES, GIB
from mgft.spec.errors import NO_VALUE, SpecError
from mgft.spec.job import Kernels, Precision, Strategy, Tuning

PLAN_FLAGS = {
    "--model": "train.model", "--tuning": "train.tuning", "--micro-batch": "train.micro_batch",
    "--seq-len": "train.seq_len", "--grad-accum": "train.grad_accum", "--lora-r": "train.lora_r",
    "--lora-dropout": "train.lora_dropout", "--kernels": "train.kernels",
    "--precision": "train.precision",
    "--gpus": "resources.gpus",
    "--nodes": "resources.nodes", "--gpu-memory": "plan.gpu_memory_gib",
    "--margin": "plan.margin",
}
MODEL_HELP = ("What to size: a known architecture (llama-3-8b, llama-3.2-1b, mistral-7b, "
              "qwen2.5-7b, ...; `--model list` shows all), a model directory or a config.json.  "
              "[required]")
_OWN_HELP = {
    "--gpus": "GPUs per node.  [default: 1]",
    "--gpu-memory": "Memory of each GPU in GiB.  [default: 80.0]",
    "--margin": "Fraction of GPU memory kept free (fragmentation, estimate error).  "
                "[default: 0.1]",
}
_CHOICES: dict[str, type] = {"--tuning": Tuning, "--kernels": Kernels,
                             "--precision": Precision}
ParamHelp = Callable[[str], tuple[str, str]]


def plan_options(field_help: ParamHelp) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option("--json", "as_json", is_flag=True,
                            help="Print JSON instead of a table.")(func)
        func = click.option("--save-merged", is_flag=True, default=False,
                            help="Size the final save with --save-merged.  [default: off]")(func)
        func = click.option("--host-memory", type=click.FloatRange(min=0, min_open=True),
                            default=None, metavar="GIB", help="Host memory of each node in "
                            "GiB; strategies that need more are not recommended.  [default: "
                            "this machine's]")(func)
        func = click.option("--activation-checkpointing/--no-activation-checkpointing",
                            default=False, help="Recompute each layer in the backward pass "
                            "instead of keeping its activations.  [default: off]")(func)
        func = click.option("--lora-dropout-recompute", is_flag=True, default=False,
                            help="Size LoRA's dropout as recomputed in the backward pass "
                            "(ddp, zero1, zero2, mp), not stored.  [default: off]")(func)
        func = click.option("--packing/--no-packing", default=True,
                            help="Pack several samples per --seq-len sequence (as the trainer "
                            "does by default); off: padded micro-batches.  [default: on]")(func)
        func = click.option("--dtype", default="bf16", metavar="[bf16|fp16|fp32]",
                            help="Weight and activation dtype.  [default: bf16]")(func)
        for flag, path in reversed(PLAN_FLAGS.items()):
            text, metavar = field_help(path)
            text = MODEL_HELP if flag == "--model" else _OWN_HELP.get(flag, text)
            if flag in _CHOICES:
                metavar = "[" + "|".join(t.value for t in _CHOICES[flag]) + "]"
            # --model is required, but checked in job_from_options: click's own error is three
            # lines of usage, and click 8.3+ takes default=None as a value given.
            func = click.option(flag, flag[2:].replace("-", "_"), default=None, metavar=metavar,
                                help=text)(func)
        return func
    return decorate


def _section(path: str) -> type:
    from mgft.spec.build import SECTIONS

    return SECTIONS[path.split(".")[0]]


def _value(flag: str, raw: Any) -> Any:
    """The option's value checked against the spec field it mirrors (its default if unset)."""
    from pydantic import TypeAdapter, ValidationError

    path = PLAN_FLAGS[flag]
    cls, leaf = _section(path), path.split(".")[1]
    if raw is None:
        return next(f.default for f in dataclasses.fields(cls) if f.name == leaf)
    hint = typing.get_type_hints(cls, include_extras=True)[leaf]
    try:
        return TypeAdapter(hint).validate_python(raw)
    except ValidationError as err:
        first = err.errors()[0]
        raise SpecError(flag, raw, first["msg"].lower(),
                        f"see `mgft plan --help` for {flag}") from None


def job_from_options(options: dict[str, Any]):
    from mgft.plan.arch import resolve
    from mgft.plan.memory import Job
    from mgft.plan.pick import Budget

    if options["model"] is None:
        raise SpecError("--model", NO_VALUE, "is required",
                        "pass a known architecture (`mgft plan --model list` shows them), a "
                        "model directory or a config.json")
    v = {flag: _value(flag, options[flag[2:].replace("-", "_")]) for flag in PLAN_FLAGS}
    if options["dtype"] not in DTYPE_BYTES:
        raise SpecError("--dtype", options["dtype"], "not one of the choices",
                        f"use one of: {', '.join(DTYPE_BYTES)}")
    if v["--gpus"] == 0:
        raise SpecError("--gpus", 0, "mgft plan sizes GPU memory", "pass --gpus 1 or more")
    job = Job(arch=resolve(v["--model"]), tuning=v["--tuning"], dtype=options["dtype"],
              micro_batch=v["--micro-batch"], seq_len=v["--seq-len"],
              grad_accum=v["--grad-accum"], checkpointing=options["activation_checkpointing"],
              lora_r=v["--lora-r"], lora_dropout=v["--lora-dropout"], gpus_per_node=v["--gpus"],
              nodes=v["--nodes"], kernels=v["--kernels"], packing=options["packing"],
              precision=v["--precision"])
    job = dataclasses.replace(job, save_merged=options["save_merged"],
                              lora_dropout_recompute=options["lora_dropout_recompute"])
    return job, Budget(gpu_memory_gib=v["--gpu-memory"], margin=v["--margin"],
                       host_memory_gib=_host_memory_gib(options["host_memory"]))


def _host_memory_gib(given: float | None) -> float | None:
    from mgft.hw import host_memory

    if given is not None:
        return given
    total = host_memory.total_bytes()
    return None if total is None else round(total / GIB, 2)


def run_plan(as_json: bool, **options: Any) -> None:
    from mgft.plan.arch import KNOWN
    from mgft.plan.pick import make_plan

    if options["model"] == "list":
        width = max(map(len, KNOWN))
        for name, arch in KNOWN.items():
            click.echo(f"{name:<{width}} {arch.params / 1e9:6.2f} B  ({arch.family})")
        return
    job, budget = job_from_options(options)
    plan = make_plan(job, budget)
    if as_json:
        click.echo(json.dumps(to_json(plan), indent=2))
    else:
        print_table(plan)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _gib(n: float) -> float:
    return round(n / GIB, 2)


def _bytes(job, strategy: Strategy) -> dict[str, int]:
    from mgft.plan.memory import param_bytes

    pb = param_bytes(job, strategy)
    return {"weights": pb.weights, "grads": pb.grads, "optimizer": pb.optimizer,
            "master": pb.master, "total": pb.total}


def by_precision(plan) -> list[dict[str, Any]]:
    """What each --precision costs: bytes per trained parameter as ddp holds them (one GPU's
    whole replica), ddp's peak, and the strategy auto would pick."""
    import dataclasses

    from mgft.plan.memory import estimate
    from mgft.plan.pick import make_plan

    rows = []
    for precision in Precision:
        job = dataclasses.replace(plan.job, precision=precision)
        ddp = estimate(job, Strategy.DDP)
        choice = make_plan(job, plan.budget).choice
        rows.append({"precision": precision.value, "bytes_per_param": _bytes(job, Strategy.DDP),
                     "ddp_peak_gib": _gib(ddp.peak), "ddp_fits": ddp.peak <= plan.budget.usable,
                     "recommended": choice.value if choice else None})
    return rows


def to_json(plan) -> dict[str, Any]:
    job, arch = plan.job, plan.job.arch
    return {
        "model": {"name": arch.name, "params": arch.params, "trainable_params": job.trainable},
        "job": {"tuning": job.tuning.value, "dtype": job.dtype, "micro_batch": job.micro_batch,
                "seq_len": job.seq_len, "grad_accum": job.grad_accum,
                "activation_checkpointing": job.checkpointing, "lora_r": job.lora_r,
                "lora_dropout_recompute": job.lora_dropout_recompute,
                "kernels": job.kernels.value, "packing": job.packing,
                "precision": job.precision.value,
                "gpus_per_node": job.gpus_per_node, "nodes": job.nodes},
        "budget": {"gpu_memory_gib": plan.budget.gpu_memory_gib, "margin": plan.budget.margin,
                   "overhead_gib": plan.budget.overhead_gib,
                   "usable_gib": _gib(plan.budget.usable),
                   "host_memory_gib": plan.budget.host_memory_gib},
        "strategies": [{
            "strategy": r.strategy.value,
            **{f"{name}_gib": _gib(value) for name, value in r.breakdown.terms().items()},
            "peak_gib": _gib(r.breakdown.peak), "peak_at": r.breakdown.peak_moment,
            "fits": r.fits, **_host_json(r),
            "max_micro_batch": r.max_micro_batch,
            "bytes_per_param": _bytes(job, r.strategy)} for r in plan.rows],
        "recommended": plan.choice.value if plan.choice else None,
        "reason": plan.reason,
        "precisions": by_precision(plan),
    }


def _host_json(r) -> dict[str, Any]:
    """Host memory of the busiest node (rank 0's): its peak, and each term (per process, but
    gather and merged: rank 0's alone)."""
    h = r.host
    return {"host_gib": _gib(h.peak), "host_peak_at": h.peak_moment, "host_fits": r.host_fits,
            "processes_per_node": h.processes,
            "host_terms_gib": {name: _gib(value) for name, value in h.terms().items()}}


def print_table(plan) -> None:
    from rich.console import Console
    from rich.table import Table

    job, arch = plan.job, plan.job.arch
    table = Table(title=f"Per-GPU memory (GiB): {arch.name}, {job.tuning.value}, "
                        f"{job.nodes} x {job.gpus_per_node} GPUs of "
                        f"{plan.budget.gpu_memory_gib:g} GiB", title_justify="left")
    for name in ("strategy", "params", "grads", "optimizer", "activations", "loss", "buffers",
                 "eval", "peak", "at", "fits", "max micro-batch", "host"):
        table.add_column(name, justify="left" if name in ("strategy", "at") else "right",
                         no_wrap=name == "strategy")
    for r in plan.rows:
        b = r.breakdown
        mark = "*" if r.strategy is plan.choice else ""
        table.add_row(f"{r.strategy.value}{mark}", *(f"{x / GIB:.1f}" for x in (
            b.params, b.grads, b.optimizer, b.activations + b.recompute, b.loss,
            b.buffers + b.backward_buffers + b.step_extra, b.eval, b.peak)),
            b.peak_moment, "yes" if r.fits else "no", str(r.max_micro_batch),
            f"{r.host.peak / GIB:.1f}" + ("" if r.host_fits else "!"),
            style="bold" if mark else None)
    console = Console(highlight=False, soft_wrap=True)  # sentences wrap where the terminal does
    if not console.is_terminal:
        console.width = 120  # pipes and files get the whole table, not an 80-column squeeze
    console.print(table, soft_wrap=False)
    share = 100 * job.trainable / arch.params
    console.print(f"model: {_count(arch.params)} parameters, {_count(job.trainable)} "
                  f"trained ({share:.2f}%); micro-batch {job.micro_batch} x seq-len "
                  f"{job.seq_len}, {job.dtype}, precision {job.precision.value}, kernels "
                  f"{job.kernels.value}, packing "
                  f"{'on' if job.packing else 'off'}, activation checkpointing "
                  f"{'on' if job.checkpointing else 'off'}")
    console.print("at: the run's highest moment (forward: end of the forward pass; step: end "
                  "of the backward pass; eval: the evaluation pass after training)")
    b = plan.budget
    console.print(f"usable per GPU: {b.gpu_memory_gib:g} GiB - {b.margin:.0%} margin - "
                  f"{b.overhead_gib:g} GiB CUDA context and NCCL = {b.usable / GIB:.1f} GiB")
    console.print(host_line(plan))
    verdict = f"recommended: {plan.reason}" if plan.choice else plan.reason
    console.print(verdict)
    console.print(precision_table(plan), soft_wrap=False)
    console.print("how each number is derived: docs/plan.md")


def host_line(plan) -> str:
    """What the host/node column adds up, and what it is compared with."""
    h = plan.rows[0].host
    text = (f"host: the busiest node's CPU memory (GiB): {h.runtime / GIB:.1f} per process "
            f"(torch, CUDA, libraries) + the final save's gather on rank 0 "
            f"({h.gather / GIB:.1f} for ddp)")
    offload = next((r for r in plan.rows if r.host.offload), None)
    if offload is not None:
        text += (f" + {offload.strategy.value}'s {offload.host.offload / GIB:.1f} per process "
                 f"({offload.host.pinned / GIB:.1f} of it pinned) and "
                 f"{offload.host.offload_extra / GIB:.1f} more, measured beside it")
    budget = plan.budget.host_memory_gib
    return text + (f"; !: more than the {budget:g} GiB of host memory" if budget is not None else
                   "; host memory unknown (--host-memory), not compared")


def precision_table(plan) -> Any:
    from rich.table import Table

    table = Table(title="By --precision: bytes per trained parameter as ddp holds them, "
                        "ddp's peak per GPU (GiB), the strategy auto picks", title_justify="left")
    for name in ("precision", "weights", "grads", "optimizer", "master", "total", "ddp peak",
                 "fits", "auto picks"):
        table.add_column(name, justify="left" if name in ("precision", "auto picks") else "right")
    for row in by_precision(plan):
        b, mark = row["bytes_per_param"], "*" if row["precision"] == plan.job.precision else ""
        table.add_row(f"{row['precision']}{mark}", *(str(b[k]) for k in (
            "weights", "grads", "optimizer", "master", "total")), f"{row['ddp_peak_gib']:.1f}",
            "yes" if row["ddp_fits"] else "no", row["recommended"] or "none",
            style="bold" if mark else None)
    return table
