"""The one error that means "the user asked for something we cannot do" (exit code 2)."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input, named the way the user typed it: flag, value, what is wrong, how to fix it."""

    def __init__(self, flag: str, value: object, problem: str, fix: str) -> None:
        super().__init__(f"{flag} {value}: {problem}; {fix}")
        self.flag = flag
        self.value = value
