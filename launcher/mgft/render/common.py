"""What every renderer shares: the Jinja environment, its quoting filters, env and argv.

Templates hold layout only. Every YAML scalar goes through `yaml` and every shell word
through `shquote`, so no user value can add a YAML key or a shell command.
"""

from __future__ import annotations

import functools
import json
import shlex
from typing import Any

import jinja2
import yaml

from mgft.envcontract import LaunchEnv
from mgft.nccl import comm_env, runtime_env
from mgft.spec import JobSpec
from mgft.train_args import to_argv

TRAINER_MODULE = "mgft_train"


def yaml_scalar(value: Any) -> str:
    """A YAML scalar that parses back to exactly `value` (strings always double-quoted)."""
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if not isinstance(value, str):
        raise TypeError(f"yaml filter got {type(value).__name__}; convert it in the renderer")
    # PyYAML's emitter escapes everything YAML cannot hold raw (controls, NEL, surrogates).
    return yaml.safe_dump(value, default_style='"', allow_unicode=False,
                          width=float("inf")).removesuffix("\n")


def shell_word(value: Any) -> str:
    return shlex.quote(str(value))


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mgft", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["yaml"] = yaml_scalar
    env.filters["shquote"] = shell_word
    # Macros end with a newline; the line that calls them adds its own.
    env.filters["chomp"] = lambda text: str(text).removesuffix("\n")
    return env


def render_template(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def job_env(spec: JobSpec) -> dict[str, str]:
    """Environment of every trainer process: mgft's defaults, then the user's `--env`."""
    env = {var.name: var.value for var in [*runtime_env(spec), *comm_env(spec)]}
    env |= LaunchEnv(device="cpu" if spec.on_cpu else "cuda", job_name=spec.job_name,
                     backend=spec.backend.value).to_env()
    return env | dict(spec.env)


def trainer_argv(spec: JobSpec) -> list[str]:
    """What torchrun runs in every process: the trainer module and its flags, or for a
    generation job the generate module and its flags. Every backend renders this same list."""
    if spec.generate is not None:
        from mgft.generate.args import generate_argv

        return generate_argv(spec)
    return ["-m", TRAINER_MODULE, *to_argv(spec.train)]


def labels(spec: JobSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "mgft", "app.kubernetes.io/managed-by": "mgft",
            "mgft.dev/job": spec.job_name}
