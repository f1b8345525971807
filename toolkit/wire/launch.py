"""Running wire processes: splitting links into shards and starting/stopping one process.

One Python process forwards on one core, so the executor runs one wire process per shard (at most
one per core) and routes each link's control ops to the process that holds it.
"""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import RunError

# What an unlimited direction is assumed to carry when balancing shards (kbit/s).
UNLIMITED_KBIT_GUESS = 100_000


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def expected_load(link: Any) -> float:
    """A link's expected forwarding work: an explicit "load" hint, else the sum of its two
    directions' rate limits (unlimited counts as UNLIMITED_KBIT_GUESS). Works on spec dicts,
    LinkSpec and topology Link objects."""
    hint = _get(link, "load")
    if isinstance(hint, int | float) and not isinstance(hint, bool) and hint >= 0:
        return float(hint)
    total = 0.0
    for which in ("forward", "reverse"):
        rate = _get(_get(link, which, {}) or {}, "rate_kbit")
        total += float(rate) if rate else UNLIMITED_KBIT_GUESS
    return total


def split_links(links: Sequence[Any], shards: int, load: Callable[[Any], float] = expected_load) -> list[list[Any]]:
    """Split links into at most `shards` non-empty groups of similar total load.

    Greedy longest-processing-time: heaviest link first, each to the lightest group. Ties keep
    the input order, so the split is deterministic. Links keep their input order in each group.
    """
    if shards < 1:
        raise ValueError("shards must be >= 1")
    count = min(shards, len(links))
    if count == 0:
        return []
    totals = [0.0] * count
    members: list[list[int]] = [[] for _ in range(count)]
    order = sorted(range(len(links)), key=lambda i: (-load(links[i]), i))
    for i in order:
        g = min(range(count), key=lambda k: (totals[k], k))
        totals[g] += load(links[i])
        members[g].append(i)
    return [[links[i] for i in sorted(group)] for group in members]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class WireProcess:
    """A started wire process. `pid` is the Python process itself (ip netns exec execs it)."""

    proc: subprocess.Popen[bytes]
    control_path: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(
        cls,
        netns: str | None,
        spec_path: str | os.PathLike[str],
        control_path: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
        timeout: float = 20.0,
        python: str = sys.executable,
        extra_args: Sequence[str] = (),
    ) -> WireProcess:
        """Start `python -m toolkit.wire` (in netns if given) and wait for `ready`."""
        control, log = Path(control_path), Path(log_path)
        cmd = [
            python,
            "-m",
            "toolkit.wire",
            "--spec",
            os.fspath(spec_path),
            "--control",
            os.fspath(control),
            *extra_args,
        ]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        with open(log, "ab") as log_file:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL)
        wire = cls(proc, control, log)
        try:
            wire._wait_ready(timeout)
        except BaseException:
            wire.stop(grace=2.0)
            raise
        return wire

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        out = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunError(
                    f"wire process {self.pid} not ready after {timeout:.0f} s; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:  # stdout closed: the process is exiting
                    code = self.proc.wait(timeout=5)
                    raise RunError(
                        f"wire process {self.pid} exited with {code} before ready; log {self.log_path}:\n{_tail(self.log_path)}"
                    )
                out += chunk
        if out.split(b"\n", 1)[0].strip() != b"ready":
            raise RunError(f"wire process {self.pid} printed {out!r} instead of 'ready'")
        # Nothing else is written to stdout; close our end so no pipe is left to fill.
        self.proc.stdout.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        # A killed process cannot remove its socket; do it (only if it is still a socket).
        try:
            if stat.S_ISSOCK(self.control_path.lstat().st_mode):
                self.control_path.unlink()
        except FileNotFoundError:
            pass
        return int(self.proc.returncode)
