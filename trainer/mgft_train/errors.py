"""The one error that means "the user asked for something we cannot do" (exit code 2)."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input, named the way the user typed it: flag, value, what is wrong, how to fix it."""

    def __init__(self, flag: str, value: object, problem: str, fix: str) -> None:
        super().__init__(f"{flag} {value}: {problem}; {fix}")
        self.flag = flag
        self.value = value
        self.problem = problem
        self.fix = fix

    def for_flag(self, flag: str) -> UsageError:
        """The same error named for another flag that takes the same kind of input (a bad
        row of --eval-dataset is found by the code that reads --dataset)."""
        return UsageError(flag, self.value, self.problem, self.fix)

    def report(self, prog: str, rank: int) -> str:
        """The stderr line. Every rank that finds bad input prints it, not rank 0 alone: the
        first rank to exit ends the job, torchrun may stop rank 0 before it has printed, and an
        input can be bad on one node only (a path missing there). Rank 0 says it as a single
        process would; the others name themselves."""
        return f"{prog}: {self}" if rank == 0 else f"{prog}: rank {rank}: {self}"
