"""The `mgft` command. Imports nothing heavy: backends load only when a job is submitted."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mgft import __version__
from mgft.errors import SpecError, SubmitError
from mgft.flags import FLAGS
from mgft.spec import Backend, JobSpec, K8sApi, SlurmContainer, Strategy, Tuning

_CHOICES = {"--backend": Backend, "--strategy": Strategy, "--tuning": Tuning, "--k8s-api": K8sApi,
            "--container": SlurmContainer}


def _field_help(path: str) -> tuple[str, str]:
    """Help text and metavar from the spec field: one source for --help and the YAML schema."""
    from mgft.config import _SECTIONS

    *section, leaf = path.split(".")
    cls = _SECTIONS[section[0]] if section else JobSpec
    hint = typing.get_type_hints(cls, include_extras=True)[leaf]
    text = next(m.description for m in hint.__metadata__ if getattr(m, "description", None))
    default = next(f.default for f in dataclasses.fields(cls) if f.name == leaf)
    if default is not dataclasses.MISSING and default is not None:
        text += f"  [default: {getattr(default, 'value', default)}]"
    kinds = typing.get_args(hint.__origin__) or (hint.__origin__,)
    metavar = next(({int: "N", float: "NUMBER"}.get(k) for k in kinds if k in (int, float)), "TEXT")
    return text, metavar


def job_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The job flags shared by `render` and `submit`, built from the FLAGS table."""
    for flag in reversed(FLAGS):
        enum = _CHOICES.get(flag)
        text, metavar = _field_help(FLAGS[flag])
        if enum:
            metavar = "[" + "|".join(e.value for e in enum) + "]"
        func = click.option(flag, flag[2:].replace("-", "_"), default=None, metavar=metavar,
                            help=text)(func)
    func = click.option("--env", "env_items", multiple=True, metavar="KEY=VALUE",
                        help="Extra environment variable for every trainer process "
                        "(repeatable).")(func)
    func = click.option("--set", "overrides", multiple=True, metavar="a.b=c",
                        help="Override any option by its YAML path, e.g. --set train.lr=1e-4 "
                        "(repeatable; applied last).")(func)
    func = click.option("--config", "config_file", type=click.Path(path_type=Path),
                        help="YAML file with job options (see `mgft config schema`).")(func)
    return func


def spec_from_options(config_file: Path | None, overrides: tuple[str, ...],
                      env_items: tuple[str, ...], **flag_values: str | None) -> JobSpec:
    from mgft.config import build_spec, check_local_inputs, load_yaml, merge

    file_data = load_yaml(config_file) if config_file else {}
    flags = {FLAGS["--" + k.replace("_", "-")]: v for k, v in flag_values.items() if v is not None}
    for item in env_items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError("--env", item, "is not KEY=VALUE",
                            "write e.g. --env WANDB_MODE=offline")
        flags[f"env.{key}"] = value
    spec = build_spec(merge(file_data, flags, overrides))
    check_local_inputs(spec)
    return spec


def _user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input is one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SpecError, SubmitError) as err:
            click.echo(f"mgft: error: {err}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mgft")
def main() -> None:
    """mgft: multi-GPU LLM fine-tuning on Kubernetes, Slurm and this machine."""


@main.command()
@job_options
@_user_errors
def render(**options: Any) -> None:
    """Print what `mgft submit` would submit, with no side effects."""
    from mgft.render import render as render_spec

    click.echo(render_spec(spec_from_options(**options)), nl=False)


@main.command()
@job_options
@_user_errors
def submit(**options: Any) -> None:
    """Submit the job (local: run torchrun here and return the trainer's exit code)."""
    from mgft import backends

    spec = spec_from_options(**options)
    sys.exit(backends.load(spec.backend).submit(spec))


@main.group()
def config() -> None:
    """The job YAML file."""


@config.command()
def schema() -> None:
    """Print the JSON schema of the job YAML (for editors and validation)."""
    from mgft.config import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


def _job_backend(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--backend", type=click.Choice([b.value for b in Backend]), default=None,
                        help="The job's backend. Default: slurm for a numeric job id, k8s for "
                        "a name.")(func)


@main.command()
@click.argument("job")
@_job_backend
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@_user_errors
def status(job: str, backend: str | None, as_json: bool) -> None:
    """Where a submitted job is: state, exit code, and a failure's last lines."""
    from mgft import manage

    sys.exit(manage.manager(manage.backend_for(job, backend), "status").status(job, as_json))


@main.command()
@click.argument("job")
@_job_backend
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--rank", type=click.IntRange(min=0), default=None, metavar="N",
              help="Only the lines of this global rank.")
@_user_errors
def logs(job: str, backend: str | None, follow: bool, rank: int | None) -> None:
    """Print a job's output: every node's, or one rank's."""
    from mgft import manage

    module = manage.manager(manage.backend_for(job, backend), "logs")
    sys.exit(module.show_logs(job, follow=follow, rank=rank))


@main.command()
@click.argument("job")
@_job_backend
@_user_errors
def cancel(job: str, backend: str | None) -> None:
    """Cancel a job and wait until it has stopped."""
    from mgft import manage

    sys.exit(manage.manager(manage.backend_for(job, backend), "cancel").cancel(job))


@main.command("list")
@_job_backend
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@_user_errors
def list_jobs(backend: str | None, as_json: bool) -> None:
    """The jobs you submitted with mgft, newest first, with their state."""
    from mgft import manage

    chosen = [Backend(backend)] if backend else list(manage.LISTED)
    sys.exit(max(manage.manager(b, "list").list_jobs(as_json) for b in chosen))


if __name__ == "__main__":
    main()
