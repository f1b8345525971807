"""Run commands inside an emulated device: its cgroup first, then its network namespace, as
`Testbed.command` does (`ip netns exec` also bind-mounts the device's /etc/netns hosts file).
Files live in the shared file system, so `put_file` writes them directly. `ops` applies small
settings (sysctls, offloads, link up) in-process, without forking (see `nsops`)."""

from __future__ import annotations

import shlex
import subprocess

from ..errors import RunError
from . import nsops
from .local import make_dir, run_argv, start_argv, write_file


class NetnsTarget:
    """One emulated device: `name` is the device, `netns` its namespace, `cgroup_tasks` the files
    a process writes its pid to in order to join the device's cgroups."""

    def __init__(self, name: str, netns: str, cgroup_tasks: list[str] | tuple[str, ...] = ()):
        self.name = name
        self.netns = netns
        self.cgroup_tasks = list(cgroup_tasks)

    @classmethod
    def for_device(cls, testbed: object, device: str) -> NetnsTarget:
        """The target of a device of a live `Testbed`."""
        d = testbed.device(device)  # type: ignore[attr-defined]
        return cls(device, d.netns, d.cgroup.tasks_files if d.cgroup else [])

    def wrap(self, argv: list[str]) -> list[str]:
        if not self.cgroup_tasks:  # no shell needed (one fork and exec fewer)
            return ["ip", "netns", "exec", self.netns, *argv]
        joins = "".join(f"echo $$ > {shlex.quote(t)} && " for t in self.cgroup_tasks)
        return ["sh", "-c", f'{joins}exec ip netns exec {shlex.quote(self.netns)} "$@"', "cnlab-exec", *argv]

    @property
    def _where(self) -> str:
        return f"device {self.name}" if self.name == self.netns else f"device {self.name} ({self.netns})"

    def run(
        self, argv: list[str], *, input: str | None = None, timeout_s: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_argv(self._where, self.wrap(argv), input=input, timeout_s=timeout_s, check=check, shown=argv)

    def start(self, argv: list[str], *, log_path: str, env: dict[str, str] | None = None) -> int:
        return start_argv(self._where, self.wrap(argv), log_path=log_path, env=env)

    def put_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        try:
            write_file(path, content, mode)
        except OSError as e:
            raise RunError(f"{self._where}: cannot write {path}: {e}") from e

    def make_dir(self, path: str) -> None:
        make_dir(self._where, path)

    def ops(self, lines: list[str]) -> None:
        """Apply `nsops` lines (sysctl, offloads-off, up) inside the namespace, in this thread."""
        nsops.run(self.netns, lines)
