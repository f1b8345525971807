"""Issue 10, high 4: strangers cannot exhaust a node's connections (real node process, real sockets)."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
from typing import Any

import pytest
from p2pvalue_node.listeners import RateLimitedAcceptErrors
from p2pvalue_node.testing import HOST, request, wait_until

IDLE = 1100  # more than the 1,024 descriptors a node used to have


@pytest.fixture
def many_fds() -> Any:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open_idle(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        err = s.connect_ex((HOST, port))
        assert err in (0, errno.EINPROGRESS), err
        socks.append(s)
    return socks


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except OSError as exc:
        return exc.errno != errno.ENOTCONN  # reset by the node: closed; still connecting: open


def _health(port: int) -> bool:
    try:
        return request(port, "GET", "/health", timeout=5).status == 200
    except OSError:
        return False


def test_idle_connections_do_not_lock_out_the_node(nodes_factory: Any, many_fds: None) -> None:
    (n,) = nodes_factory(1, limits={"max_client_connections": 64, "header_timeout_s": 1.0})
    assert n.proc is not None
    nofile = [line for line in open(f"/proc/{n.proc.pid}/limits") if line.startswith("Max open files")][0].split()
    assert int(nofile[3]) == int(nofile[4]) or int(nofile[3]) >= 8192, nofile  # soft raised to hard
    socks = _open_idle(n.client_port, IDLE)
    try:
        # the other listeners still answer while the client listener is flooded
        assert request(n.metrics_port, "GET", "/health", timeout=30).status == 200
        assert request(n.fed_port, "GET", "/health", timeout=30).status == 200
        # idle connections that never send a request head are closed (header timeout or cap): the node's
        # descriptors come back down and the client listener answers again while the flood still stands
        # (some of the flood's sockets never learn: the kernel dropped their handshake's last ACK)
        assert wait_until(lambda: len(os.listdir(f"/proc/{n.proc.pid}/fd")) < 200, timeout=120, interval=0.5)
        assert wait_until(lambda: _health(n.client_port), timeout=120, interval=0.5)
        # how many of the flood's handshakes the kernel completed depends on its backlog (seen: 493
        # and over 550 of 1,100): the node must have closed a large share of them itself
        assert sum(_closed_by_peer(s) for s in socks) > IDLE / 4
        metrics = request(n.metrics_port, "GET", "/metrics").body.decode()
        assert 'p2pvalue_connections_refused_total{listener="client",reason="cap"}' in metrics
        assert 'p2pvalue_connections_refused_total{listener="client",reason="header_timeout"}' in metrics
    finally:
        for s in socks:
            s.close()
    # a slow client that sends part of a request head is cut off too
    slow = socket.create_connection((HOST, n.client_port))
    try:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        slow.settimeout(60)
        try:
            assert slow.recv(100) == b""  # closed by the node
        except ConnectionResetError:
            pass  # or reset (abort): closed either way
    finally:
        slow.close()
    assert n.proc.poll() is None


def test_accept_errors_are_rate_limited() -> None:
    seen: list[str] = []
    loop = asyncio.new_event_loop()
    try:
        handler = RateLimitedAcceptErrors(lambda _loop, ctx: seen.append(ctx["message"]), interval_s=3600)
        for _ in range(9000):
            handler(loop, {"message": "socket.accept() out of system resource", "exception": OSError(24, "EMFILE")})
        handler(loop, {"message": "something else"})
    finally:
        loop.close()
    assert seen == ["socket.accept() out of system resource", "something else"]
    assert handler.suppressed == 8999
