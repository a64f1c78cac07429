"""The one user-facing error type, and the problems validation collects."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with user input: where it is and what was expected."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class HarnessError(Exception):
    """An error caused by user input or the environment; the CLI prints it as one line, no traceback.

    :param exit_code: 2 for usage errors (bad suite, bad option), 1 for runtime failures.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class ValidationError(HarnessError):
    """Several problems found at once; each is printed on its own line."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems), exit_code=2)
