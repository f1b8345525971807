"""Running wire processes: splitting links into shards and starting/stopping one process.

One Python process forwards on one core, so the executor runs one wire process per shard (at most
one per core) and routes each link's control ops to the process that holds it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import RunError
from toolkit.targets import Target

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


def _state(pid: int) -> str | None:
    """The process state letter from /proc (None: gone). Reaps it first if it is our child."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (or reaped already)
        done, status = 0, 0
    if done:
        _exit_codes[pid] = os.waitstatus_to_exitcode(status)
        return None
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


_exit_codes: dict[int, int] = {}  # exit codes of our children reaped by _state


@dataclass
class WireProcess:
    """A started wire process: `pid` is the Python process itself (the target's `ip netns exec`
    execs it). It runs detached (its own session); its stdout and stderr go to `log_path`."""

    pid: int
    control_path: Path
    log_path: Path

    @classmethod
    def start(
        cls,
        target: Target,
        spec_path: str | os.PathLike[str],
        control_path: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
        timeout: float = 20.0,
        python: str = sys.executable,
        extra_args: Sequence[str] = (),
    ) -> WireProcess:
        """Start `python -m toolkit.wire` on `target` (the wire namespace's) and wait until it
        prints `ready` into its log."""
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
        try:
            offset = log.stat().st_size  # the log is appended to: look only past what is there
        except FileNotFoundError:
            offset = 0
        wire = cls(target.start(cmd, log_path=os.fspath(log)), control, log)
        try:
            wire._wait_ready(offset, timeout)
        except BaseException:
            wire.stop(grace=2.0)
            raise
        return wire

    def _wait_ready(self, offset: int, timeout: float) -> None:
        """Poll the log for the `ready` line (every 5 ms: a wire takes ~0.3 s to start)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(offset)
                    text = f.read()
            except FileNotFoundError:
                text = b""
            if any(line.strip() == b"ready" for line in text.splitlines()):
                return
            if not self.alive():
                raise RunError(
                    f"wire process {self.pid} exited{self._code_text()} before ready; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise RunError(
                    f"wire process {self.pid} not ready after {timeout:.0f} s; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.005)

    def _code_text(self) -> str:
        code = _exit_codes.get(self.pid)
        return "" if code is None else f" with {code}"

    def alive(self) -> bool:
        return _state(self.pid) not in (None, "Z", "X")

    def wait(self, timeout: float) -> int | None:
        """Wait for the process to exit; its exit code if it was our child, else None."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise RunError(f"wire process {self.pid} still running after {timeout:g} s")
            time.sleep(0.01)
        return _exit_codes.get(self.pid)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code (None when the
        process was not our child)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.wait(grace)
            except RunError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.wait(5)
        # A killed process cannot remove its socket; do it (only if it is still a socket).
        try:
            if stat.S_ISSOCK(self.control_path.lstat().st_mode):
                self.control_path.unlink()
        except FileNotFoundError:
            pass
        return _exit_codes.get(self.pid)
