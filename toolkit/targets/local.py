"""Run commands on this machine, in the caller's namespaces."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import RunError
from .base import command_failed


def run_argv(
    target: str,
    argv: list[str],
    *,
    input: str | None,
    timeout_s: float,
    check: bool,
    shown: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv; errors name the target and `shown` (the caller's command, without the wrapper
    that gets it into a namespace), default argv."""
    shown = shown or argv
    try:
        cp = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as e:
        raise RunError(f"{target}: `{argv[0]}` not found: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise RunError(f"{target}: `{' '.join(shown)[:200]}` did not finish within {timeout_s:g} s") from e
    if check and cp.returncode != 0:
        raise command_failed(target, shown, cp)
    return cp


def start_argv(target: str, argv: list[str], *, log_path: str, env: dict[str, str] | None) -> int:
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env} if env else None,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            raise RunError(f"{target}: cannot start `{' '.join(argv)[:200]}`: {e}") from e
    return proc.pid


KERNEL_FILES = ("/proc/", "/sys/")


def write_file(path: str, content: bytes, mode: int) -> None:
    """Atomic for readers (a temporary file renamed over the old one). Not fsync'ed: what is
    written here (testbed and node files under /run and /etc/netns) does not outlive the machine's
    processes anyway, and an fsync costs ~3.5 ms a file here (hundreds per testbed)."""
    p = Path(path)
    if path.startswith(KERNEL_FILES):  # cgroup settings, sysctls: no temporary files there
        with open(p, "wb") as f:
            f.write(content)
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what the caller asked for
        os.write(fd, content)
    finally:
        os.close(fd)
    os.replace(tmp, p)


def make_dir(target: str, path: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"{target}: cannot create directory {path}: {e}") from e


class LocalTarget:
    """This machine."""

    def __init__(self, name: str = "local"):
        self.name = name

    def run(
        self, argv: list[str], *, input: str | None = None, timeout_s: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_argv(self.name, argv, input=input, timeout_s=timeout_s, check=check)

    def start(self, argv: list[str], *, log_path: str, env: dict[str, str] | None = None) -> int:
        return start_argv(self.name, argv, log_path=log_path, env=env)

    def put_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        try:
            write_file(path, content, mode)
        except OSError as e:
            raise RunError(f"{self.name}: cannot write {path}: {e}") from e

    def make_dir(self, path: str) -> None:
        make_dir(self.name, path)
