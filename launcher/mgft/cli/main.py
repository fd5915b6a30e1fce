"""The `mgft` command. Imports nothing heavy: backends load only when a job is submitted."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mgft import __version__
from mgft.cli import jobs as jobs_cli
from mgft.spec.choices import (
    Backend,
    DataFormat,
    Fabric,
    K8sApi,
    Kernels,
    Overlong,
    PodSecurity,
    Precision,
    Save,
    SlurmContainer,
    Strategy,
    Tuning,
)
from mgft.spec.errors import SpecError, one_line_errors
from mgft.spec.flags import FLAGS

if TYPE_CHECKING:
    from mgft.spec.job import JobSpec

_CHOICES = {"--backend": Backend, "--strategy": Strategy, "--tuning": Tuning, "--k8s-api": K8sApi,
            "--data-format": DataFormat, "--overlong": Overlong, "--fabric": Fabric,
            "--kernels": Kernels, "--precision": Precision, "--save": Save,
            "--pod-security": PodSecurity, "--container": SlurmContainer}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Once per spec class: building the options asks for ~300 fields, and each uncached
    # get_type_hints re-evaluates every annotation of the class (most of `mgft`'s start-up).
    return typing.get_type_hints(cls, include_extras=True)


@functools.cache
def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _field_help(path: str) -> tuple[str, str]:
    """Help text and metavar from the spec field: one source for --help and the YAML schema."""
    from mgft.spec.build import SECTIONS
    from mgft.spec.job import JobSpec

    *section, leaf = path.split(".")
    cls = SECTIONS[section[0]] if section else JobSpec
    hint = _hints(cls)[leaf]
    text = next(m.description for m in hint.__metadata__ if getattr(m, "description", None))
    default = _defaults(cls)[leaf]
    if default is not dataclasses.MISSING and default is not None:
        text += f"  [default: {getattr(default, 'value', default)}]"
    kinds = typing.get_args(hint.__origin__) or (hint.__origin__,)
    metavar = next(({int: "N", float: "NUMBER"}.get(k) for k in kinds if k in (int, float)), "TEXT")
    return text, "BOOL" if bool in kinds else metavar


class LazyOptions(click.Command):
    """A command whose options are built the first time click asks for them (to parse its
    arguments or print its help), so that each `mgft` call builds, and imports what it needs
    for, only its own command's options: there are about 100 per command."""

    def __init__(self, *args: Any, options: Callable[[], list[click.Parameter]],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._options: Callable[[], list[click.Parameter]] | None = options

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if self._options is not None:
            self.params[:0] = self._options()
            self._options = None
        return super().get_params(ctx)


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def options_of(*decorators: Decorator) -> list[click.Parameter]:
    """The parameters that stacking these click.option decorators (outermost first) adds, in
    the order click gives them to a command."""
    def holder() -> None: ...

    for decorate in reversed(decorators):
        holder = decorate(holder)
    return list(reversed(holder.__click_params__))  # type: ignore[attr-defined]


def job_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The job flags shared by `render` and `submit`, built from the FLAGS table."""
    for flag in reversed(FLAGS):
        enum = _CHOICES.get(flag)
        text, metavar = _field_help(FLAGS[flag])
        if enum:
            metavar = "[" + "|".join(e.value for e in enum) + "]"
        if metavar == "BOOL":  # --packing / --no-packing, --debug-dist; None when neither given
            func = click.option(f"{flag}/--no-{flag[2:]}", flag[2:].replace("-", "_"),
                                default=None, help=text)(func)
            continue
        func = click.option(flag, flag[2:].replace("-", "_"), default=None, metavar=metavar,
                            help=text)(func)
    func = click.option("--env", "env_items", multiple=True, metavar="KEY=VALUE",
                        help="Extra environment variable for every trainer process "
                        "(repeatable).")(func)
    func = click.option("--nccl", "nccl_items", multiple=True, metavar="KEY=VALUE",
                        help="NCCL variable that overrides the --fabric preset, e.g. "
                        "--nccl NCCL_SOCKET_IFNAME==eth1 (repeatable; see `mgft nccl "
                        "explain`).")(func)
    func = click.option("--set", "overrides", multiple=True, metavar="a.b=c",
                        help="Override any option by its YAML path, e.g. --set train.lr=1e-4 "
                        "(repeatable; applied last).")(func)
    func = click.option("--config", "config_file", type=click.Path(path_type=Path),
                        help="YAML file with job options (see `mgft config schema`).")(func)
    return func


def spec_from_options(config_file: Path | None, overrides: tuple[str, ...],
                      env_items: tuple[str, ...], nccl_items: tuple[str, ...] = (),
                      check_files: bool = True, **flag_values: str | None) -> JobSpec:
    from mgft.spec.build import (
        build_spec,
        check_local_inputs,
        flag_paths,
        load_yaml,
        merge,
        parse_env_items,
    )

    file_data = load_yaml(config_file) if config_file else {}
    flags = flag_paths(flag_values, FLAGS) | parse_env_items(env_items)
    for item in nccl_items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError("--nccl", item, "is not KEY=VALUE",
                            "write e.g. --nccl NCCL_SOCKET_IFNAME==eth1")
        flags[f"dist.nccl.{key}"] = value
    notes: list[str] = []
    from mgft.plan import resolve_auto

    spec = build_spec(merge(file_data, flags, overrides), note=notes.append,
                      resolve_auto=resolve_auto)
    if check_files:
        check_local_inputs(spec)
    _warn(spec)
    for text in notes:  # after every check, so bad input stays a single line
        click.echo(f"mgft: {text}", err=True)
    return spec


def _warn(spec: JobSpec) -> None:
    from mgft.comm.nccl import warnings
    from mgft.spec import validate

    for text in validate.warnings(spec) + warnings(spec):
        click.echo(f"mgft: warning: {text}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mgft")
def main() -> None:
    """mgft: multi-GPU LLM fine-tuning on Kubernetes, Slurm and this machine."""


@main.command(cls=LazyOptions, options=lambda: options_of(job_options))
@one_line_errors
def render(**options: Any) -> None:
    """Print what `mgft submit` would submit, with no side effects."""
    from mgft.render import render as render_spec

    spec = spec_from_options(**options)
    click.echo(render_spec(spec, _local_gpus(spec)), nl=False)


def _local_gpus(spec: JobSpec) -> tuple[str, ...] | None:
    """The GPUs `submit` would choose now; without a driver here, submit chooses them."""
    from mgft.hw import gpus

    try:
        choice = gpus.choose_for(spec)
    except gpus.NoGpuDriver as err:
        click.echo(f"mgft: note: {err.problem}; no CUDA_VISIBLE_DEVICES rendered, `mgft submit` "
                   "chooses GPUs where it runs", err=True)
        return None
    return choice.visible if choice else None


_REPLACE = click.option("--replace", is_flag=True, help="k8s: delete a job of the same name "
                        "first (a claim with outputs is kept).")


@main.command(cls=LazyOptions, options=lambda: options_of(job_options, _REPLACE))
@one_line_errors
def submit(replace: bool, **options: Any) -> None:
    """Submit the job (local: run torchrun here and return the trainer's exit code)."""
    from mgft import backends

    spec = spec_from_options(**options)
    backend = backends.load(spec.backend)
    if not replace:
        sys.exit(backend.submit(spec))
    if spec.backend is not Backend.K8S:
        raise SpecError("--replace", True, f"only applies to --backend k8s, not "
                        f"{spec.backend.value}", "drop --replace")
    sys.exit(backend.submit(spec, replace=True))


def _plan_options() -> list[click.Parameter]:
    from mgft.plan.report import plan_options

    return options_of(plan_options(_field_help))


def _generate_options() -> list[click.Parameter]:
    from mgft.generate.launch import generate_options

    return options_of(generate_options(_field_help, _CHOICES))


@main.command(cls=LazyOptions, options=_plan_options)
@one_line_errors
def plan(**options: Any) -> None:
    """Estimate per-GPU memory under each strategy; recommend one and the largest micro-batch."""
    from mgft.plan.report import run_plan

    run_plan(**options)


@main.command(cls=LazyOptions, options=_generate_options)
@one_line_errors
def generate(**options: Any) -> None:
    """Generate completions for a JSONL of prompts on every GPU (local, Slurm or k8s);
    rerun with the same --output to resume."""
    from mgft.generate.launch import run_generate

    sys.exit(run_generate(**options))


@main.group()
def config() -> None:
    """The job YAML file."""


@config.command()
def schema() -> None:
    """Print the JSON schema of the job YAML (for editors and validation)."""
    from mgft.spec.build import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


# --- Diagnostics: GPUs, NCCL environment, doctor -----------------------------------------------

@main.command()
@click.option("--gpus", "count", type=click.IntRange(1, 64), default=None,
              help="Show which N GPUs `mgft submit --gpus N` would pick now.")
@click.option("--gpu-ids", default=None, metavar="IDS", help="Check these GPUs (as --gpu-ids).")
@click.option("--exclusive", is_flag=True, help="Refuse busy GPUs (as --exclusive).")
@one_line_errors
def gpus(count: int | None, gpu_ids: str | None, exclusive: bool) -> None:
    """This machine's GPUs (NVML), how busy each is, and what mgft would choose."""
    from mgft.cli.tables import show_gpus

    sys.exit(show_gpus(count, gpu_ids, exclusive))


@main.group()
def nccl() -> None:
    """The NCCL environment mgft gives a job."""


_JSON_TABLE = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON instead of a table.")


@nccl.command(cls=LazyOptions, options=lambda: options_of(job_options, _JSON_TABLE))
@one_line_errors
def explain(as_json: bool, **options: Any) -> None:
    """Print every variable the job gets and why; what `auto` resolves at start."""
    from mgft.cli.tables import show_explain

    if options.get("config_file") is None:  # explain needs no model or data
        for name in ("model", "dataset"):
            options[name] = options.get(name) or "(unused)"
    show_explain(spec_from_options(**options, check_files=False), as_json)


@main.command()
@click.option("--bandwidth", is_flag=True,
              help="Also measure all-reduce bus bandwidth across this machine's GPUs "
              "(under torchrun; nccl-tests convention).")
@click.option("--rdzv", default=None, metavar="HOST:PORT",
              help="Rendezvous endpoint to resolve and connect to (in a job: MASTER_ADDR).")
@click.option("--deadline", type=float, default=5.0, show_default=True,
              help="Seconds allowed for DNS plus TCP connect.")
@click.option("--gpus", "count", type=click.IntRange(1, 64), default=None,
              help="Bandwidth: GPUs to use (default: every free GPU).")
@click.option("--gpu-ids", default=None, metavar="IDS", help="Bandwidth: exactly these GPUs.")
@click.option("--cpu", "cpu_ranks", type=click.IntRange(2, 64), default=None, metavar="N",
              help="Bandwidth: N ranks on CPU with gloo (also used where there is no GPU).")
@click.option("--fabric", type=click.Choice([f.value for f in Fabric]), default="auto",
              show_default=True, help="Bandwidth: NCCL preset to measure with.")
@click.option("--sizes", default=None, help="Bandwidth: sizes, e.g. 1M,16M,256M,1G.")
@click.option("--iters", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option("--warmup", type=click.IntRange(0, 1000), default=5, show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the results as JSON here.")
@one_line_errors
def doctor(**options: Any) -> None:
    """Check this machine (or, run inside a job, this node) for what breaks multi-GPU jobs."""
    from mgft.doctor.command import doctor_main

    sys.exit(doctor_main(**options))


# status, logs, cancel, list: thin commands that dispatch on --backend (mgft/cli/jobs.py).
jobs_cli.register(main)

if __name__ == "__main__":
    main()
