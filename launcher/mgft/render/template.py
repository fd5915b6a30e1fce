"""What every renderer shares: the Jinja environment, its quoting filters and the labels.

Templates hold layout only. Every YAML scalar goes through `yaml` and every shell word
through `shquote`, so no user value can add a YAML key or a shell command.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from typing import Any

import jinja2

from mgft.render import precompiled
from mgft.spec.job import JobSpec

# Printable ASCII except the two characters a double-quoted YAML scalar escapes (" and \).
_VERBATIM = re.compile(r'[ !#-\[\]-~]*')


def yaml_scalar(value: Any) -> str:
    """A YAML scalar that parses back to exactly `value` (strings always double-quoted)."""
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if not isinstance(value, str):
        raise TypeError(f"yaml filter got {type(value).__name__}; convert it in the renderer")
    if _VERBATIM.fullmatch(value):
        return f'"{value}"'  # what pyyaml_scalar writes (a test checks), without PyYAML
    return pyyaml_scalar(value)


def pyyaml_scalar(text: str) -> str:
    """PyYAML's double-quoted scalar: its emitter escapes everything YAML cannot hold raw
    (controls, NEL, surrogates). Imported here, as most values need none of it."""
    import yaml

    return yaml.safe_dump(text, default_style='"', allow_unicode=False,
                          width=float("inf")).removesuffix("\n")


def shell_word(value: Any) -> str:
    return shlex.quote(str(value))


def _configured(loader: jinja2.BaseLoader) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=loader,
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


def source_environment() -> jinja2.Environment:
    """The templates in launcher/mgft/templates, compiled by Jinja when first rendered."""
    return _configured(jinja2.PackageLoader("mgft", "templates"))


@functools.cache
def environment() -> jinja2.Environment:
    """The environment renderers use: the templates as `make golden` compiled them
    (mgft.render.precompiled), or their source under another Jinja release."""
    if not precompiled.current():
        return source_environment()
    return _configured(precompiled.PrecompiledLoader())


def render_template(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def labels(spec: JobSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "mgft", "app.kubernetes.io/managed-by": "mgft",
            "mgft.dev/job": spec.job_name}
