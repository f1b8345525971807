"""Small per-namespace operations without forking: sysctls, offloads, link up.

At hundreds of namespaces under load, `ip netns exec NS sh -c 'sysctl ...; ethtool ...'` costs
tens of milliseconds per namespace in forks alone. Here the calling *thread* enters the namespace
with setns(2) (network namespaces are per thread), writes /proc/sys/net (resolved against the
calling thread's namespace), and uses ioctls on a socket created inside it; then it returns to
its own namespace.

Operations are text lines (what the plan stores and `--dry-run` prints):
    sysctl net.ipv4.ip_forward 1
    offloads-off IFNAME        # tx checksum, TSO, GSO, GRO off: `ethtool -K IF tx off tso off gso off gro off`
    up IFNAME                  # `ip link set IFNAME up`
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import fcntl
import os
import re
import socket
import struct
from collections.abc import Iterator

from ..errors import RunError

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ_SIZE = 40

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside network namespace `name`."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                _setns(own)
            except OSError as e:  # never expected; the thread would be stuck in the namespace
                raise SystemExit(f"cnlab: cannot return from namespace {name}: {e}") from e
    finally:
        os.close(own)


def _ifreq(ifname: str, payload: bytes) -> bytes:
    return (struct.pack("16s", ifname.encode()) + payload).ljust(IFREQ_SIZE, b"\0")


ETHTOOL_GSSET_INFO = 0x37
ETHTOOL_GSTRINGS = 0x1B
ETHTOOL_SFEATURES = 0x3B
ETH_SS_FEATURES = 4
ETH_GSTRING_LEN = 32
# What `ethtool -K IF tx off tso off gso off gro off` turns off, by feature name.
OFFLOAD_FEATURES = re.compile(r"tx-checksum-.*|tx-tcp.*-segmentation|tx-generic-segmentation|rx-gro")
_feature_names: list[str] | None = None


def _ioctl_ethtool(sock: socket.socket, ifname: str, buf: array.array[int]) -> None:
    addr, _ = buf.buffer_info()
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(ifname, struct.pack("P", addr)))


def feature_names(sock: socket.socket, ifname: str) -> list[str]:
    """The kernel's netdev feature names, in bit order (the same for every device)."""
    global _feature_names
    if _feature_names is None:
        # struct ethtool_sset_info {u32 cmd; u32 reserved; u64 sset_mask; u32 data[1];}
        info = array.array("I", [ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0, 0])
        _ioctl_ethtool(sock, ifname, info)
        count = info[4]
        # struct ethtool_gstrings {u32 cmd; u32 string_set; u32 len; u8 data[len * 32];}
        raw = array.array(
            "B", struct.pack("III", ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count) + bytes(count * ETH_GSTRING_LEN)
        )
        _ioctl_ethtool(sock, ifname, raw)
        data = raw.tobytes()[12:]
        _feature_names = [
            data[i * ETH_GSTRING_LEN : (i + 1) * ETH_GSTRING_LEN].split(b"\0")[0].decode() for i in range(count)
        ]
    return _feature_names


def offloads_off(sock: socket.socket, ifname: str) -> None:
    """ETHTOOL_SFEATURES: clear every checksum, TSO, GSO and GRO feature of ifname."""
    names = feature_names(sock, ifname)
    blocks = (len(names) + 31) // 32
    valid = [0] * blocks
    for bit, name in enumerate(names):
        if OFFLOAD_FEATURES.fullmatch(name):
            valid[bit // 32] |= 1 << (bit % 32)
    # struct ethtool_sfeatures {u32 cmd; u32 size; {u32 valid; u32 requested;} features[size];}
    words = [ETHTOOL_SFEATURES, blocks]
    for v in valid:
        words += [v, 0]
    _ioctl_ethtool(sock, ifname, array.array("I", words))


def link_up(sock: socket.socket, ifname: str) -> None:
    got = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, _ifreq(ifname, b""))
    flags = struct.unpack_from("H", got, 16)[0]
    fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, _ifreq(ifname, struct.pack("H", flags | IFF_UP)))


def sysctl(key: str, value: str) -> None:
    with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(value)


def run(name: str, lines: list[str]) -> None:
    """Apply operation lines inside namespace `name`."""
    with netns(name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for line in lines:
                op, *args = line.split()
                try:
                    if op == "sysctl":
                        sysctl(args[0], args[1])
                    elif op == "offloads-off":
                        offloads_off(sock, args[0])
                    elif op == "up":
                        link_up(sock, args[0])
                    else:
                        raise RunError(f"unknown namespace operation {line!r}")
                except OSError as e:
                    raise RunError(f"{line!r} in {name} failed: {e}") from e
        finally:
            sock.close()
