"""Shared helpers for the node benchmarks: real node processes on 127.0.0.1, RSS, result files."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pvalue_node.config import render_config
from p2pvalue_node.keys import generate, write_key

HOST = "127.0.0.1"
ADMIN = "benchmark-admin-token-0123456789"
RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class BenchNode:
    domain: str
    dir: Path
    client_port: int
    fed_port: int
    metrics_port: int
    public_key: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    def start(self) -> None:
        log = open(self.dir / "node.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "p2pvalue_node.cli", "serve", "--config",
                                      str(self.dir / "node.yaml"), "--log-level", "warning"],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.domain} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

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
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


def make_nodes(count: int, **settings: Any) -> tuple[Path, list[BenchNode]]:
    base = Path(tempfile.mkdtemp(prefix="p2pvalue-bench-"))
    nodes = []
    for i in range(count):
        d = base / f"n{i}"
        d.mkdir()
        key = generate()
        write_key(key, d / "signing.key")
        nodes.append(BenchNode(f"n{i}.bench", d, free_port(), free_port(), free_port(), key.public_b64))
    for n in nodes:
        values = {
            "domain": n.domain,
            "listen": {"client": {"host": HOST, "port": n.client_port},
                       "federation": {"host": HOST, "port": n.fed_port},
                       "metrics": {"host": HOST, "port": n.metrics_port}},
            "data_dir": str(n.dir / "data"), "signing_key": str(n.dir / "signing.key"), "admin_token": ADMIN,
            "trusted_peers": [{"domain": o.domain, "address": f"http://{HOST}:{o.fed_port}",
                               "public_key": o.public_key} for o in nodes if o is not n],
            **settings,
        }
        (n.dir / "node.yaml").write_text(render_config(values))
    return base, nodes


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    try:  # share of time some runnable task waited for a CPU, over the last 60 s
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        load += f", CPU pressure avg60 {some[2].split('=')[1]}%"
    except (OSError, IndexError):
        pass
    return (f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
            f"{mem:.0f} GiB, Python {platform.python_version()}; load average before the run: {load} "
            "(the machine is shared with other work)")


def write_result(name: str, title: str, command: str, body: str) -> Path:
    """Add this run's figures to results/NAME.md, newest first, keeping earlier runs: on a shared
    machine the spread between runs is part of the result."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## Run of {now}\n\n- date: {now}\n- machine: {machine()}\n- command: `{command}`\n\n{body}\n"
    header = f"# {title}\n\n"
    old = path.read_text() if path.exists() else ""
    earlier = old.split("\n## Run of ", 1)[1] if "\n## Run of " in old else ""
    path.write_text(header + section + ("\n## Run of " + earlier if earlier else ""))
    print(section)
    return path
