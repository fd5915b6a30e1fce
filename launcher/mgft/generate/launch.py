"""`mgft generate`: flags → a generation JobSpec → the same renderers and backends as training.

A generation job is a JobSpec with a `generate` section: train.model is the base model,
train.dataset the prompts, train.output where results go, train.micro_batch the prompts per
forward pass and train.seed the sampling seed. Renderers run `mgft_train.generate` in place of
the trainer (`mgft.contract.process.trainer_argv`), so local, Slurm and k8s all work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import click

from mgft.contract.generate import BATCH_SIZE
from mgft.spec.flags import FLAGS, GENERATE_FLAGS, naming
from mgft.spec.job import JobSpec

# Spec fields `mgft generate` keeps under a name that says what they mean here.
RENAMED = {"--prompts": "train.dataset", "--batch-size": "train.micro_batch"}
_OWN_HELP = {
    "--prompts": "JSONL of prompts, as seen by the job: one object per line with 'prompt' "
                 "(text), 'messages' (a chat) or 'instruction' and optional 'input' (alpaca).",
    "--batch-size": f"Prompts per process per forward pass; halved if a batch runs out of GPU "
                    f"memory.  [default: {BATCH_SIZE}]",
    "--strategy": "ddp: a whole model per GPU (default); mp: one process per node splits the "
                  "model over its GPUs.",
    "--seed": "Seed for sampling (with --temperature above 0).  [default: 0]",
    "--output": "Directory for generations.jsonl, per-rank shards (kept for resuming) and "
                "generation_metrics.json. Rerun with the same --output to resume.",
}
# Training flags that generation also uses; the other train.* flags and the memory plan's
# flags mean nothing here.
_KEEP_TRAIN = ("train.model", "train.output", "train.seed", "train.strategy")
ParamHelp = Callable[[str], tuple[str, str]]


def generate_flags() -> dict[str, str]:
    """flag -> spec path for `mgft generate`, in --help order."""
    job = {flag: path for flag, path in FLAGS.items()
           if not path.startswith(("train.", "plan.")) or path in _KEEP_TRAIN}
    first = {"--model": job.pop("--model"), "--prompts": RENAMED["--prompts"],
             "--output": job.pop("--output"), **GENERATE_FLAGS,
             "--batch-size": RENAMED["--batch-size"], "--seed": job.pop("--seed")}
    return first | job


def generate_options(field_help: ParamHelp, choices: Mapping[str, type[Enum]]
                     ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click options of `mgft generate`; help text comes from the spec's descriptions."""
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for flag, path in reversed(generate_flags().items()):
            text, metavar = field_help(path)
            text = _OWN_HELP.get(flag, text)
            if flag in choices:
                metavar = "[" + "|".join(e.value for e in choices[flag]) + "]"
            if flag == "--strategy":
                metavar = "[ddp|mp]"
            name = flag[2:].replace("-", "_")
            if metavar == "BOOL":  # on/off flags, as for render and submit
                func = click.option(f"{flag}/--no-{flag[2:]}", name, default=None,
                                    help=text)(func)
            else:
                func = click.option(flag, name, default=None, metavar=metavar, help=text)(func)
        func = click.option("--dry-run", is_flag=True,
                            help="Print the job `mgft generate` would submit, and stop.")(func)
        func = click.option("--env", "env_items", multiple=True, metavar="KEY=VALUE",
                            help="Extra environment variable for every process "
                            "(repeatable).")(func)
        func = click.option("--set", "overrides", multiple=True, metavar="a.b=c",
                            help="Override any option by its YAML path, e.g. --set "
                            "generate.top_p=0.9 (repeatable; applied last).")(func)
        return click.option("--config", "config_file", type=click.Path(path_type=Path),
                            help="YAML job file (see `mgft config schema`); its `generate` "
                            "section holds the options above.")(func)
    return decorate


def build_generate_spec(config_file: Path | None, overrides: tuple[str, ...],
                        env_items: tuple[str, ...], note: Callable[[str], None],
                        **flag_values: Any) -> JobSpec:
    from mgft.spec.build import (
        build_spec,
        check_local_inputs,
        flag_paths,
        load_yaml,
        merge,
        parse_env_items,
    )

    file_data = load_yaml(config_file) if config_file else {}
    flags = flag_paths(flag_values, generate_flags()) | parse_env_items(env_items)
    raw = merge(file_data, flags, overrides)
    raw["generate"] = raw.get("generate") or {}  # its presence makes this a generation job
    train = raw.setdefault("train", {})
    if isinstance(train, dict):
        train.setdefault("micro_batch", BATCH_SIZE)
    from mgft.plan import resolve_auto

    with naming(generate_flags()):
        spec = build_spec(raw, note=note, resolve_auto=resolve_auto)
        check_local_inputs(spec)
    return spec


def run_generate(dry_run: bool, **options: Any) -> int:
    notes: list[str] = []
    spec = build_generate_spec(note=notes.append, **options)
    from mgft.spec.validate import warnings

    for text in warnings(spec):
        click.echo(f"mgft: warning: {text}", err=True)
    for text in notes:
        click.echo(f"mgft: {text}", err=True)
    if dry_run:
        from mgft.render import render

        click.echo(render(spec), nl=False)
        return 0
    from mgft import backends

    return backends.load(spec.backend).submit(spec)
