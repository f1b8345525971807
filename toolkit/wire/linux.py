"""The Linux pieces the wire needs: offloads, interfaces, a precise timer (timerfd). The
AF_PACKET sockets and their receive rings are in wire_ring.

Why timerfd: asyncio's epoll timeout has millisecond granularity (it rounds up), which alone
would add ~0.5 ms mean lateness to every release. A timerfd registered as a reader fires at the
requested nanosecond-resolution CLOCK_MONOTONIC time, the clock `time.monotonic()` reads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from toolkit.errors import RunError
from toolkit.targets import LocalTarget, Target

HERE = LocalTarget("wire")

OFFLOADS_OFF = ("tx", "off", "tso", "off", "gso", "off", "gro", "off")


def disable_offloads(ifname: str, target: Target = HERE) -> None:
    """Turn off checksum and segmentation offloads on a veth end whose frames cross the wire
    (`target`: where the interface is; by default this process's own namespace).

    Needed on BOTH ends of every such veth: with offloads on, frames carry partial checksums or
    are larger than the MTU, ping still works, and TCP silently hangs.
    """
    done = target.run(["ethtool", "-K", ifname, *OFFLOADS_OFF], timeout_s=10, check=False)
    # ethtool exits 0 or, on some versions, non-zero with "Could not change any device
    # features" when everything was already off; check the result instead of the exit code.
    if done.returncode != 0 and not _offloads_already_off(ifname, target):
        raise RunError(f"{target.name}: ethtool -K {ifname} failed (exit {done.returncode}): {done.stderr.strip()}")


def _offloads_already_off(ifname: str, target: Target) -> bool:
    done = target.run(["ethtool", "-k", ifname], timeout_s=10, check=False)
    if done.returncode != 0:
        return False
    wanted = {
        "tx-checksumming",
        "tcp-segmentation-offload",
        "generic-segmentation-offload",
        "generic-receive-offload",
    }
    state = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in wanted:
            state[name.strip()] = value.split()[0] if value.split() else ""
    return all(state.get(w) == "off" for w in wanted)


def prepare_interface(ifname: str) -> None:
    """Bring a wire-side end up and keep this namespace's own stack off it (no IPv6 autoconf)."""
    ipv6 = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    if ipv6.exists():
        try:
            ipv6.write_text("1\n")
        except OSError:
            pass
    HERE.run(["ip", "link", "set", ifname, "up"], timeout_s=10)


def interface_mtu(ifname: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{ifname}/mtu").read_text())
    except (OSError, ValueError):
        return 1500


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1
PR_SET_TIMERSLACK = 29


class TimerFd:
    """A one-shot CLOCK_MONOTONIC timer as a file descriptor (for loop.add_reader)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
        fd = libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd: int = fd
        self._spec = _Itimerspec()
        # The default 50 us timer slack would be added to every wake-up; ask for 1 us.
        libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(1000), 0, 0, 0)

    def arm_at(self, when: float) -> None:
        """Fire at monotonic time `when` (seconds); a time in the past fires at once."""
        sec = int(when)
        nsec = int((when - sec) * 1e9)
        if sec <= 0 and nsec <= 0:
            sec, nsec = 0, 1  # all-zero would disarm
        self._spec.it_value.tv_sec = sec
        self._spec.it_value.tv_nsec = nsec
        if self._settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def consume(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)
