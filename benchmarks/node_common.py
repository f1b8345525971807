"""Shared helpers for the node benchmarks: real node processes on 127.0.0.1, RSS, result files."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_machine import describe
from p2pvalue_node import testing
from p2pvalue_node.testing import ADMIN, HOST, LocalNode, request

RESULTS = Path(__file__).resolve().parent / "results"


class BenchNode(LocalNode):
    """A real node process, plus what the benchmarks read of it: memory and plain JSON calls."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def pss_uss_mb(self) -> tuple[float, float]:
        assert self.proc is not None
        vals: dict[str, int] = {}
        for line in Path(f"/proc/{self.proc.pid}/smaps_rollup").read_text().splitlines()[1:]:
            k, v = line.split(":", 1)
            vals[k] = int(v.split()[0])
        uss = vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)
        return vals["Pss"] / 1024, uss / 1024

    def call(self, method: str, path: str, body: Any = None, token: str = ADMIN) -> Any:
        reply = request(self.client_port, method, path, body, token=token, timeout=30)
        if reply.status >= 400:  # an OSError, as urllib raises, so callers can wait and retry
            raise OSError(f"{method} {path}: {reply.status} {reply.body[:200]!r}")
        return reply.json()


def make_nodes(count: int, **settings: Any) -> tuple[Path, list[BenchNode]]:
    """Nodes with the image's default federation settings, in a fresh temporary directory."""
    base = Path(tempfile.mkdtemp(prefix="p2pvalue-bench-"))
    return base, testing.make_nodes(base, count, node_class=BenchNode, fast_federation=False, **settings)


def shared_pair(a: BenchNode, b: BenchNode) -> tuple[str, str, str]:
    """alice on A, bob on B, one object of alice's shared with bob; waits until B has it.
    Returns (alice's token, bob's token, object id)."""
    alice = a.call("POST", "/api/admin/accounts", {"username": "alice"}, ADMIN)["token"]
    bob = b.call("POST", "/api/admin/accounts", {"username": "bob"}, ADMIN)["token"]
    oid = a.call("POST", "/api/objects", {"participants": [f"bob@{b.domain}"]}, alice)["id"]
    deadline = time.monotonic() + 30
    while True:
        try:
            b.call("GET", f"/api/objects/{oid}", None, bob)
            return alice, bob, oid
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def write_result(name: str, title: str, command: str, body: str) -> Path:
    """Add this run's figures to results/NAME.md, newest first, keeping earlier runs: on a shared
    machine the spread between runs is part of the result."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## Run of {now}\n\n- date: {now}\n- machine: {describe()} (the machine is shared with other work)\n- command: `{command}`\n\n{body}\n"
    header = f"# {title}\n\n"
    old = path.read_text() if path.exists() else ""
    earlier = old.split("\n## Run of ", 1)[1] if "\n## Run of " in old else ""
    path.write_text(header + section + ("\n## Run of " + earlier if earlier else ""))
    print(section)
    return path
