"""Routes of the calling thread's network namespace through rtnetlink, many per system call: what
`ip route del DST` and `ip route replace DST via GW dev IF src SRC` send, byte for byte, without a
process per namespace and without waiting for each acknowledgement before the next request.

Why: a partition of a 1,000-device grid deletes ~1,000,000 routes and the heal adds them back.
`ip -batch` costs ~20-25 us a route here (one request, one acknowledgement, at a time); requests
packed into one `send` cost ~5 us a route in the kernel (benchmarks/results/partition_scale.md).

Use inside `nsops.netns(name)`: a netlink socket belongs to the namespace it was created in, and
interface names are resolved there.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence
from typing import Protocol

from ..errors import RunError

RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
NLMSG_ERROR = 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC = 1, 4, 5, 7
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_NOWHERE, RTN_UNICAST = 254, 3, 0, 255, 1
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
CHUNK = 256  # requests per send: their acknowledgements (36 bytes each) fit the receive buffer

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags


class RouteLike(Protocol):
    dst: str
    via: str
    dev: str
    src: str


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def _addr(text: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return family, socket.inet_pton(family, text)


def _prefix(dst: str) -> tuple[int, int, bytes]:
    addr, _, plen = dst.partition("/")
    family, raw = _addr(addr)
    return family, int(plen) if plen else len(raw) * 8, raw


class RouteBatch:
    """Route requests for one namespace, encoded as they are added, sent by `apply()`."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.what: list[str] = []  # the `ip` line of each request, for error messages
        self._oif: dict[str, bytes] = {}

    def delete(self, dst: str) -> None:
        family, plen, raw = _prefix(dst)
        body = _RTMSG.pack(family, plen, 0, 0, RT_TABLE_MAIN, 0, RT_SCOPE_NOWHERE, 0, 0) + _attr(RTA_DST, raw)
        self._add(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, body, f"route del {dst}")

    def replace(self, route: RouteLike) -> None:
        """Needs the namespace: the interface index is looked up in the calling thread's one."""
        family, plen, raw = _prefix(route.dst)
        oif = self._oif.get(route.dev)
        if oif is None:
            try:
                oif = self._oif[route.dev] = _attr(RTA_OIF, struct.pack("=I", socket.if_nametoindex(route.dev)))
            except OSError as e:
                raise RunError(f"route replace {route.dst} dev {route.dev}: no such interface ({e})") from e
        body = (
            _RTMSG.pack(family, plen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
            + _attr(RTA_DST, raw)
            + _attr(RTA_GATEWAY, _addr(route.via)[1])
            + _attr(RTA_PREFSRC, _addr(route.src)[1])
            + oif
        )
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE
        self._add(
            RTM_NEWROUTE, flags, body, f"route replace {route.dst} via {route.via} dev {route.dev} src {route.src}"
        )

    def _add(self, kind: int, flags: int, body: bytes, what: str) -> None:
        self.requests.append(_HDR.pack(_HDR.size + len(body), kind, flags, len(self.requests), 0) + body)
        self.what.append(what)

    def apply(self) -> None:
        """Send every request; raise RunError naming the first ones the kernel refused (the others
        are applied, as with `ip -force -batch`)."""
        failed: list[str] = []
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # acks without a copy of the request
            sock.bind((0, 0))
            buf = bytearray(65536)
            for lo in range(0, len(self.requests), CHUNK):
                chunk = self.requests[lo : lo + CHUNK]
                sock.sendall(b"".join(chunk))
                pending = len(chunk)
                while pending:
                    size = sock.recv_into(buf)
                    off = 0
                    while off < size:
                        length, kind, _flags, seq, _pid = _HDR.unpack_from(buf, off)
                        if kind == NLMSG_ERROR:
                            pending -= 1
                            code = -struct.unpack_from("=i", buf, off + _HDR.size)[0]
                            if code:
                                failed.append(
                                    f"{self.what[seq]}: {os.strerror(code)} ({errno.errorcode.get(code, code)})"
                                )
                        off += (length + 3) & ~3
        if failed:
            more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
            raise RunError("; ".join(failed[:3]) + more)


def change_routes(delete: Sequence[str], replace: Sequence[RouteLike]) -> int:
    """Delete then add-or-replace routes in the calling thread's namespace; returns how many
    requests were sent."""
    batch = RouteBatch()
    for dst in delete:
        batch.delete(dst)
    for route in replace:
        batch.replace(route)
    batch.apply()
    return len(batch.requests)
