"""The deployer's cheap readiness scan (toolkit/deploy/probe.py `listening`) on real loopback sockets."""

from __future__ import annotations

import socket

from toolkit.deploy.probe import listening


def test_listening_names_only_ports_that_accept() -> None:
    with socket.socket() as srv, socket.socket() as closed:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        closed.bind(("127.0.0.1", 0))  # bound, not listening: the kernel refuses connections
        up, down = srv.getsockname()[1], closed.getsockname()[1]
        urls = {"up": f"http://127.0.0.1:{up}/health", "down": f"http://127.0.0.1:{down}/health"}
        assert listening(urls) == {"up"}
        assert listening({}) == set()
