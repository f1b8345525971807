"""An SSH connection that is dropped before the banner (a busy sshd beyond its MaxStartups drops new
connections) is tried again; after the last attempt the error names the device and the count."""

from __future__ import annotations

import socket
import threading

import pytest

from toolkit.errors import RunError
from toolkit.targets import ssh


def test_a_dropped_connection_is_tried_again_then_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(ssh, "CONNECT_RETRY_S", 0.01)
    monkeypatch.setattr(ssh, "CONNECT_TIMEOUT_S", 1.0)
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.1)
    accepted = []
    done = threading.Event()

    def drop_every_connection() -> None:
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            accepted.append(conn)
            conn.close()

    t = threading.Thread(target=drop_every_connection, daemon=True)
    t.start()
    ep = ssh.SshEndpoint("d1", "127.0.0.1", port=srv.getsockname()[1], key_file=str(tmp_path / "nokey"))
    try:
        with pytest.raises(
            RunError, match=rf"device d1: cannot connect over SSH .*\({ssh.CONNECT_ATTEMPTS} attempts\)"
        ):
            ssh.SshTarget(ep, tmp_path / "known_hosts").connect()
    finally:
        done.set()
        t.join(timeout=5)
        srv.close()
    assert len(accepted) == ssh.CONNECT_ATTEMPTS
