"""The target seam: run a command, start a long-lived process, put a file, somewhere.

A `Target` is where a command runs: this machine (`LocalTarget`), inside an emulated device's
network namespace and cgroup (`NetnsTarget`), or a real device over SSH. Callers never build
`ip netns exec` or `ssh` command lines themselves.
"""

from __future__ import annotations

import subprocess
from typing import Protocol, runtime_checkable

from ..errors import RunError

Completed = subprocess.CompletedProcess  # what `run` returns (args, returncode, stdout, stderr)


@runtime_checkable
class Target(Protocol):
    """Where commands run. `name` appears in every error message."""

    name: str

    def run(
        self, argv: list[str], *, input: str | None = None, timeout_s: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run argv to completion, capturing text output. check=True raises RunError naming the
        target and the command when it exits non-zero (or cannot start, or times out)."""
        ...

    def start(self, argv: list[str], *, log_path: str, env: dict[str, str] | None = None) -> int:
        """Start argv detached (its own session, stdin closed, stdout+stderr appended to log_path);
        return its pid. The caller journals the pid."""
        ...

    def put_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        """Write a file atomically with the given mode, creating parent directories. (Kernel
        attribute files under /proc and /sys cannot be replaced: they are written in place.)"""
        ...

    def make_dir(self, path: str) -> None:
        """Create a directory and its parents; an existing one is fine."""
        ...


def command_failed(target: str, argv: list[str], cp: subprocess.CompletedProcess[str]) -> RunError:
    err = (cp.stderr or cp.stdout or "").strip().splitlines()
    shown = " ".join(argv)
    return RunError(
        f"{target}: `{shown[:200]}` failed (exit {cp.returncode})" + (": " + " | ".join(err[-5:]) if err else "")
    )
