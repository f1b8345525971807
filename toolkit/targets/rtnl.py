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
from functools import lru_cache

from ..errors import RunError

RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
NLMSG_ERROR = 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC = 1, 4, 5, 7
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RT_SCOPE_NOWHERE, RTN_UNICAST = 254, 3, 0, 255, 1
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
CHUNK = 256  # requests per send: their acknowledgements (36 bytes each) fit the receive buffer

_DEL = NLM_F_REQUEST | NLM_F_ACK
_NEW = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE
_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags


RouteSpec = tuple[str, str, str, str]  # (dst, via, dev, src) as in `ip route replace DST via VIA dev DEV src SRC`


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def _addr(text: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return family, socket.inet_pton(family, text)


# Encoded pieces, memoised: a testbed has a few thousand distinct addresses, used a million times.
# Every request has sequence number 0: the kernel acknowledges the requests of one send in order.
@lru_cache(maxsize=1 << 16)
def _delete_request(dst: str) -> bytes:
    body = _dst(dst, False)
    return _HDR.pack(_HDR.size + len(body), RTM_DELROUTE, _DEL, 0, 0) + body


@lru_cache(maxsize=1 << 16)
def _dst(dst: str, new: bool) -> bytes:
    """rtmsg + RTA_DST of a request for prefix `dst` (to add or replace when `new`, else to delete)."""
    addr, _, plen = dst.partition("/")
    family, raw = _addr(addr)
    bits = int(plen) if plen else len(raw) * 8
    if new:
        head = _RTMSG.pack(family, bits, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    else:
        head = _RTMSG.pack(family, bits, 0, 0, RT_TABLE_MAIN, 0, RT_SCOPE_NOWHERE, 0, 0)
    return head + _attr(RTA_DST, raw)


@lru_cache(maxsize=1 << 16)
def _addr_attr(kind: int, addr: str) -> bytes:
    return _attr(kind, _addr(addr)[1])


class RouteBatch:
    """Route requests for one namespace, encoded as they are added, sent by `apply()`."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self._items: list[str | RouteSpec] = []  # what each request is, for error messages
        self._oif: dict[str, bytes] = {}

    def delete(self, dst: str) -> None:
        self.requests.append(_delete_request(dst))
        self._items.append(dst)

    def replace(self, route: RouteSpec) -> None:
        """Needs the namespace: the interface index is looked up in the calling thread's one."""
        dst, via, dev, src = route
        oif = self._oif.get(dev)
        if oif is None:
            try:
                oif = self._oif[dev] = _attr(RTA_OIF, struct.pack("=I", socket.if_nametoindex(dev)))
            except OSError as e:
                raise RunError(f"route replace {dst} dev {dev}: no such interface ({e})") from e
        body = _dst(dst, True) + _addr_attr(RTA_GATEWAY, via) + _addr_attr(RTA_PREFSRC, src) + oif
        self.requests.append(_HDR.pack(_HDR.size + len(body), RTM_NEWROUTE, _NEW, 0, 0) + body)
        self._items.append(route)

    def what(self, seq: int) -> str:
        item = self._items[seq]
        if isinstance(item, str):
            return f"route del {item}"
        return "route replace {} via {} dev {} src {}".format(*item)

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
                acked = 0  # acknowledgements come in the order of the requests
                while acked < len(chunk):
                    size = sock.recv_into(buf)
                    off = 0
                    while off < size:
                        length, kind = _HDR.unpack_from(buf, off)[:2]
                        if kind == NLMSG_ERROR:
                            code = -struct.unpack_from("=i", buf, off + _HDR.size)[0]
                            if code:
                                failed.append(
                                    f"{self.what(lo + acked)}: {os.strerror(code)} ({errno.errorcode.get(code, code)})"
                                )
                            acked += 1
                        off += (length + 3) & ~3
        if failed:
            more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
            raise RunError("; ".join(failed[:3]) + more)


def change_routes(delete: Sequence[str], replace: Sequence[RouteSpec]) -> int:
    """Delete then add-or-replace routes in the calling thread's namespace; returns how many
    requests were sent."""
    batch = RouteBatch()
    for dst in delete:
        batch.delete(dst)
    for route in replace:
        batch.replace(route)
    batch.apply()
    return len(batch.requests)
