"""TCP sockets of the calling thread's network namespace through sock_diag netlink (what `ss` uses):
list them, and destroy given ones (SOCK_DESTROY, what `ss -K` does).

Why not /proc/net/tcp: reading it walks the kernel's whole established hash table (262,144 buckets
here, shared by all namespaces) for each 4 KiB chunk, ~50 ms per namespace even when it holds two
sockets; a netlink dump is one pass. Why not `ss -K`: a process per namespace.

Use inside `nsops.netns(name)`: a netlink socket belongs to the namespace it was created in.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
SOCK_DESTROY = 21
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN, TCP_TIME_WAIT = 10, 6  # include/net/tcp_states.h
ALL_STATES = 0xFFF

_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI48s")  # inet_diag_req_v2: family, protocol, ext, pad, states, id
_MSG = struct.Struct("=BBBB48sIIIII")  # inet_diag_msg: family, state, timer, retrans, id, ...


@dataclass(frozen=True)
class TcpSocket:
    family: int
    state: int  # TCP_* from include/net/tcp_states.h
    sockid: bytes  # struct inet_diag_sockid as the kernel gave it (ports, addresses, cookie)

    @property
    def ports(self) -> tuple[int, int]:
        """(local, remote) port."""
        local, remote = struct.unpack_from("!HH", self.sockid)
        return local, remote

    @property
    def listening(self) -> bool:
        return self.state == TCP_LISTEN

    @property
    def time_wait(self) -> bool:
        return self.state == TCP_TIME_WAIT


def _request(nl: socket.socket, msg_type: int, flags: int, family: int, states: int, sockid: bytes) -> None:
    body = _REQ.pack(family, socket.IPPROTO_TCP, 0, 0, states, sockid)
    nl.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags, 1, 0) + body)


def _replies(nl: socket.socket) -> list[tuple[int, bytes]]:
    """(type, payload) of the kernel's answer up to its end (NLMSG_DONE, or an error/ack)."""
    out: list[tuple[int, bytes]] = []
    while True:
        data = nl.recv(1 << 16)
        off = 0
        while off + _NLMSGHDR.size <= len(data):
            length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
            payload = data[off + _NLMSGHDR.size : off + length]
            out.append((mtype, payload))
            if mtype in (NLMSG_DONE, NLMSG_ERROR):
                return out
            off += (length + 3) & ~3


def tcp_sockets() -> list[TcpSocket]:
    """Every TCP socket (IPv4 and IPv6) of the calling thread's namespace."""
    out = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        for family in (socket.AF_INET, socket.AF_INET6):
            _request(nl, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, family, ALL_STATES, bytes(48))
            for mtype, payload in _replies(nl):
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    raise OSError(err, f"sock_diag dump: {os.strerror(err)}")
                if mtype == SOCK_DIAG_BY_FAMILY and len(payload) >= _MSG.size:
                    fam, state, _t, _r, sockid, *_ = _MSG.unpack_from(payload)
                    out.append(TcpSocket(fam, state, sockid))
    return out


def destroy(sockets: list[TcpSocket]) -> int:
    """Destroy the given sockets (of the calling thread's namespace); returns how many are gone
    (destroyed now, or closed meanwhile). OSError if the kernel refuses (no CONFIG_INET_DIAG_DESTROY,
    no CAP_NET_ADMIN)."""
    gone = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        for s in sockets:
            _request(nl, SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, s.family, ALL_STATES, s.sockid)
            for mtype, payload in _replies(nl):
                if mtype != NLMSG_ERROR:
                    continue
                err = -struct.unpack_from("=i", payload)[0]
                if err in (0, errno.ENOENT):  # done, or it closed by itself meanwhile
                    gone += 1
                else:
                    raise OSError(err, f"SOCK_DESTROY: {os.strerror(err)}")
    return gone
