"""One error hierarchy for cnlab. The CLI maps these to exit codes; nothing else prints tracebacks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake in an input file, at a 1-based line and column (0 when unknown)."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}: {self.message}"
        return f"{self.file}: {self.message}" if self.file else self.message


class CnlabError(Exception):
    """Base of every error cnlab reports to a user. Exit code 1: a failure at run time."""

    exit_code = 1


class InputError(CnlabError):
    """Bad input from the user (a file, an argument). Exit code 2; always reported whole."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem("", 0, 0, problems)]  # an argument, not a file
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class RunError(CnlabError):
    """Something failed while cnlab was doing its work (a command, the kernel, a peer)."""

    exit_code = 1
