"""Errors a user can act on: each names the field, the bad value and the fix."""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

_PLAIN = re.compile(r"[\w./:@+,-]+")


def show(value: object) -> str:
    """A value as the user would type it; quoted only when it holds anything unusual."""
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return value
    return repr(value)


# The value of an option that was not given at all: `--model is required; ...`.
NO_VALUE = object()


class SpecError(ValueError):
    """Invalid job options. The CLI prints it as one line and exits with code 2."""

    def __init__(self, field: str, value: object, problem: str, fix: str) -> None:
        self.field, self.value, self.problem, self.fix = field, value, problem, fix
        if value is NO_VALUE:
            super().__init__(f"{field} {problem}; {fix}")
        else:
            super().__init__(f"{field} {show(value)}: {problem}; {fix}")


@contextlib.contextmanager
def as_spec_error() -> Iterator[None]:
    """Run the trainer's own checks (mgft_train.checks) in the launcher: a UsageError they
    raise becomes the same one line, before anything starts."""
    from mgft_train.errors import UsageError

    try:
        yield
    except UsageError as err:
        raise SpecError(err.flag, err.value, err.problem, err.fix) from None


def fail(path: str, value: object, problem: str, fix: str) -> None:
    """Raise a SpecError for the spec field at `path`, named as the user wrote it."""
    from mgft.spec.flags import display_name

    raise SpecError(display_name(path), value, problem, fix)


class SubmitError(RuntimeError):
    """A backend could not submit or run a job for a reason the user can fix."""


def one_line_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """For CLI commands: bad input is one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SpecError, SubmitError) as err:
            print(f"mgft: error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
