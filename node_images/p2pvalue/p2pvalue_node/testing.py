"""Run real local nodes for tests and development: `p2pvalue-node serve` processes on 127.0.0.1.

`make_nodes(dir, n)` writes keys and configs (rendered from the image template) for n nodes that
trust each other, on free loopback ports; `LocalNode.start()/stop()/kill()` manage one process by its
pid. Used by the node's tests; nothing here talks to any address but 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import render_config
from .keys import generate, write_key

HOST = "127.0.0.1"
ADMIN = "admin-token-for-tests-0123456789"


def free_port() -> int:
    """A port that is free now, chosen at random below the kernel's ephemeral range: a port the kernel
    hands out for `bind(0)` comes from that range, and between this check and the node's own bind an
    outgoing connection anywhere on the machine could take it as its source port (seen in CI as
    "address already in use")."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(100) if low > 2048 else ():
        port = random.randrange(max(1024, low - 16384), low)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


@dataclass
class LocalNode:
    domain: str
    dir: Path
    client_port: int
    fed_port: int
    metrics_port: int
    public_key: str
    config_path: Path
    proc: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def fed_address(self) -> str:
        return f"http://{HOST}:{self.fed_port}"

    def start(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.domain} is already running")
        log = open(self.dir / "node.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "p2pvalue_node.cli",
                "serve",
                "--config",
                str(self.config_path),
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.domain} exited: {(self.dir / 'node.log').read_text()[-2000:]}")
            try:
                if request(self.client_port, "GET", "/health", timeout=1).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.domain} did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def req(self, method: str, path: str, body: Any = None, user: str | None = None, **kw: Any) -> Reply:
        token = kw.pop("token", None) or (self.tokens[user] if user else None)
        return request(self.client_port, method, path, body, token=token, **kw)

    def add_user(self, name: str) -> str:
        r = request(self.client_port, "POST", "/api/admin/accounts", {"username": name}, token=ADMIN)
        if r.status != 201:
            raise RuntimeError(f"creating account {name} failed: {r.status} {r.body!r}")
        self.tokens[name] = r.json()["token"]
        return f"{name}@{self.domain}"


def make_nodes(
    base: Path, count: int, *, node_class: type[LocalNode] = LocalNode, fast_federation: bool = True, **settings: Any
) -> list[Any]:
    """Write keys and rendered configs for `count` nodes that all trust each other.

    fast_federation shortens anti-entropy and backoff so tests see repairs in seconds; benchmarks
    turn it off to measure the image's defaults."""
    keys = []
    specs: list[LocalNode] = []
    for i in range(count):
        d = base / f"n{i}"
        d.mkdir(parents=True)
        key = generate()
        write_key(key, d / "signing.key")
        keys.append(key)
        specs.append(
            node_class(f"n{i}.test", d, free_port(), free_port(), free_port(), key.public_b64, d / "node.yaml")
        )
    fed: dict[str, Any] = (
        {"antientropy_interval_s": 2.0, "backoff_initial_s": 0.1, "backoff_max_s": 1.0, "request_timeout_s": 3.0}
        if fast_federation
        else {}
    )
    fed.update(settings.pop("federation", {}))
    for s in specs:
        values = {
            "domain": s.domain,
            "listen": {
                "client": {"host": HOST, "port": s.client_port},
                "federation": {"host": HOST, "port": s.fed_port},
                "metrics": {"host": HOST, "port": s.metrics_port},
            },
            "data_dir": str(s.dir / "data"),
            "signing_key": str(s.dir / "signing.key"),
            "admin_token": ADMIN,
            "trusted_peers": [
                {"domain": o.domain, "address": o.fed_address, "public_key": o.public_key} for o in specs if o is not s
            ],
            **({"federation": fed} if fed else {}),
            **settings,
        }
        s.config_path.write_text(render_config(values))
    return specs


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> bool:
    """Poll until predicate() is true; bounded in time. Returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        ok = predicate()
        if ok or time.monotonic() > deadline:
            return bool(ok)
        time.sleep(interval)
