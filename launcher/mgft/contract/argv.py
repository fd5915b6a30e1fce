"""The argv codec between the launcher and the processes it starts: one for training
(`TrainSpec`) and for generation (`mgft.contract.generate.GenerateArgs`).

The launcher writes a dataclass as one `--flag=value` word per field (`to_argv`), every field
that has a value, so a job runs the same even if the image's defaults differ from the
launcher's; the process parses them back (`from_argv`). Both sides derive the flags from the
dataclass fields, so adding a field needs no change here.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from enum import Enum
from typing import Any, TypeVar

from mgft.spec.job import TrainSpec

T = TypeVar("T")


def flag_for(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def to_argv(args: Any) -> list[str]:
    argv: list[str] = []
    for f in dataclasses.fields(args):
        value = getattr(args, f.name)
        if value is None:
            continue
        text = _text(value)
        # One `--flag=value` word, so a value that starts with "-" is never read as a flag.
        argv.append(f"{flag_for(f.name)}={text}")
    return argv


def _text(value: Any) -> str:
    """A tuple (--report-to) is one comma-separated word, as the flag is typed."""
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    return value.value if isinstance(value, Enum) else str(value)


def from_argv(cls: type[T], argv: Sequence[str], prog: str, description: str) -> T:
    """Parse argv into `cls`; bad values exit with code 2 and name the flag."""
    from pydantic import TypeAdapter, ValidationError

    parser = argparse.ArgumentParser(prog=prog, description=description)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        parser.add_argument(flag_for(f.name), dest=f.name, required=required, default=None)
    # The deepspeed launcher passes --local_rank; rank comes from the env contract instead.
    parser.add_argument("--local_rank", "--local-rank", dest="_local_rank", help=argparse.SUPPRESS)
    ns = vars(parser.parse_args(list(argv)))
    ns.pop("_local_rank")
    given = {k: v for k, v in ns.items() if v is not None}
    try:
        return TypeAdapter(cls).validate_python(given)
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        parser.error(f"{flag_for(name)} {given.get(name)!r}: {first['msg']}")
        raise AssertionError("unreachable") from None  # parser.error exits


def parse_train(argv: Sequence[str], prog: str = "mgft-train") -> TrainSpec:
    """The trainer's flags: `TrainSpec`, as `to_argv(spec.train)` wrote it."""
    return from_argv(TrainSpec, argv, prog, "mgft trainer")
