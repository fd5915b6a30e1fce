"""What every renderer shares: the Jinja environment, its quoting filters and the labels.

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

from mgft.spec.job import JobSpec


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


def labels(spec: JobSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "mgft", "app.kubernetes.io/managed-by": "mgft",
            "mgft.dev/job": spec.job_name}
