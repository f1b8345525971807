"""sock_diag netlink (toolkit/targets/sockdiag.py) on real sockets: it lists a connection's
TIME_WAIT end and destroys exactly that socket (root: SOCK_DESTROY needs CAP_NET_ADMIN)."""

from __future__ import annotations

import socket

import pytest

from toolkit.targets import sockdiag

pytestmark = pytest.mark.netns  # root: SOCK_DESTROY needs CAP_NET_ADMIN


def test_lists_and_destroys_a_time_wait_socket() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        cli = socket.create_connection(("127.0.0.1", port))
        local = cli.getsockname()[1]
        conn, _ = srv.accept()
        cli.close()  # the client closes first: its end goes to TIME_WAIT once the server closes too
        conn.close()

        def ours() -> list[sockdiag.TcpSocket]:
            return [s for s in sockdiag.tcp_sockets() if s.ports == (local, port)]

        tw = ours()
        assert [s.time_wait for s in tw] == [True]
        listener = [s for s in sockdiag.tcp_sockets() if s.ports[0] == port and s.listening]
        assert len(listener) == 1
        assert sockdiag.destroy(tw) == 1
        assert ours() == []
        assert sockdiag.destroy(tw) == 1  # already gone counts as gone
