"""The forwarding engine: frames in on one veth end, shaped, out on the other.

One asyncio loop. Each wire-side end has a non-blocking AF_PACKET socket; all of them and the
timer sit in one inner epoll set, which asyncio watches as a single reader (one asyncio callback
per wake-up instead of one per socket). Admitted frames go into ONE heap ordered by
release time (all links and directions together), and ONE timerfd is armed for the earliest
release; when it fires, every frame that is due is sent. So the cost is O(log n) per frame and
one wake-up per batch of due frames, not one asyncio timer per frame.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from toolkit.testbed.wire_shaping import Shaper, Verdict, direction_to_dict, make_rng
from toolkit.testbed.wire_spec import LinkSpec, WireSpec
from toolkit.testbed.wire_stats import DirectionStats
from toolkit.testbed.wire_sys import (
    PACKET_OUTGOING,
    SO_TIMESTAMPNS,
    TimerFd,
    interface_mtu,
    open_packet_socket,
)
from toolkit.topology.model import Direction

log = logging.getLogger("cnlab.wire")

# Passes over the ready sockets per asyncio wake-up, and events per pass; after that, control
# requests get a turn (asyncio calls us again at once if frames are still waiting).
MAX_PASSES = 64
MAX_EVENTS = 256
MAX_BURST = 32
# Frames due within this much of now are sent in the same wake-up (a second wake-up would
# cost more than releasing them a few microseconds early).
EARLY_S = 0.00002
TIMESPEC = struct.Struct("@qq")
CMSG_SPACE = socket.CMSG_SPACE(TIMESPEC.size)


@dataclass(eq=False)
class Flow:
    """One direction of one link: frames read on the other end's socket leave on `out`."""

    link_id: str
    which: str  # "forward" | "reverse"
    shaper: Shaper
    out: socket.socket
    stats: DirectionStats = field(default_factory=DirectionStats)
    queued: int = 0


@dataclass(eq=False)
class Port:
    """A wire-side veth end: its socket and the flow its received frames belong to."""

    sock: socket.socket
    flow: Flow
    bufsize: int
    filtered: bool  # the kernel already hides our own sends (PACKET_IGNORE_OUTGOING)
    burst: int = 1  # frames to read per pass; adapts to the socket's traffic
    last_pass: int = -1  # the pass (within one wake-up) in which it was last ready


@dataclass(eq=False)
class WireLink:
    spec: LinkSpec
    forward: Flow
    reverse: Flow

    @property
    def up(self) -> bool:
        return self.forward.shaper.up


class Engine:
    def __init__(self, spec: WireSpec, kernel_timestamps: bool = True):
        """kernel_timestamps: schedule each frame from the kernel's receive time (SO_TIMESTAMPNS)
        rather than from when this process got round to reading it, so a late wake-up on the
        receive side does not add to the emulated delay."""
        self.spec = spec
        self.kernel_timestamps = kernel_timestamps
        self.links: dict[str, WireLink] = {}
        self._sockets: list[socket.socket] = []
        self._heap: list[tuple[float, int, Flow, bytes]] = []
        self._seq = 0
        self._armed = math.inf
        self._timer: TimerFd | None = None
        self._ep: select.epoll | None = None
        self._ports: dict[int, Port] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started = time.monotonic()
        self._reading_since = 0.0  # see mark_ready()

    # -- setup and teardown -------------------------------------------------------------------

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind a socket on every wire-side end and start reading. Interfaces must exist and be up."""
        self._loop = loop
        self._ep = select.epoll()
        self._timer = TimerFd()
        self._ep.register(self._timer.fd, select.EPOLLIN)
        for ls in self.spec.links:
            a_sock, a_filtered = self._open(ls.a_if)
            b_sock, b_filtered = self._open(ls.b_if)
            fwd = Flow(ls.id, "forward", Shaper(ls.forward, make_rng(self.spec.seed, ls.id, "forward"), ls.up), b_sock)
            rev = Flow(ls.id, "reverse", Shaper(ls.reverse, make_rng(self.spec.seed, ls.id, "reverse"), ls.up), a_sock)
            self.links[ls.id] = WireLink(ls, fwd, rev)
            for sock, flow, ifname, filtered in ((a_sock, fwd, ls.a_if, a_filtered), (b_sock, rev, ls.b_if, b_filtered)):
                self._ports[sock.fileno()] = Port(sock, flow, interface_mtu(ifname) + 64, filtered)
                self._ep.register(sock.fileno(), select.EPOLLIN)
        loop.add_reader(self._ep.fileno(), self._on_events)

    def mark_ready(self) -> None:
        """From now on the wire serves frames promptly; frames that arrived earlier (sent while
        the testbed came up) are timed from here, so their wait is not counted as lateness."""
        self._reading_since = time.monotonic()

    def _open(self, ifname: str) -> tuple[socket.socket, bool]:
        sock, filtered = open_packet_socket(ifname)
        if self.kernel_timestamps:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sockets.append(sock)
        return sock, filtered

    def close(self) -> None:
        if self._ep is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._ep.fileno())
            self._ep.close()
            self._ep = None
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self._ports.clear()
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    # -- the data path ------------------------------------------------------------------------

    def _on_events(self) -> None:
        """asyncio saw our epoll fd readable: serve ready sockets and the timer in passes.

        Each pass reads up to `port.burst` frames from every ready socket (level-triggered, so a
        socket with more is ready again next pass). burst stays 1 for sockets that get a frame
        now and then -- so there is no failing EAGAIN read per wake-up, which cost as much as the
        frame itself when many links carry a little traffic each -- and doubles (up to
        MAX_BURST) while a socket is still ready pass after pass, as bulk flows are.
        """
        assert self._ep is not None and self._timer is not None
        poll = self._ep.poll
        ports = self._ports
        timer_fd = self._timer.fd
        for pass_no in range(1, MAX_PASSES + 1):
            events = poll(0, MAX_EVENTS)
            if not events:
                break
            now = time.monotonic()
            offset = time.time() - now  # kernel stamps are CLOCK_REALTIME
            for fd, _ in events:
                if fd == timer_fd:
                    self._timer.consume()
                    self._armed = math.inf
                else:
                    port = ports[fd]
                    if port.last_pass == pass_no - 1:  # still ready after the last pass: bulk
                        port.burst = min(MAX_BURST, port.burst << 1)
                    port.last_pass = pass_no
                    for _ in range(port.burst):
                        if not self._receive(port, now, offset):
                            port.burst = 1
                            break
            self._release_due()
        heap = self._heap
        if heap and heap[0][0] < self._armed:
            self._arm(heap[0][0])

    def _receive(self, port: Port, now: float, realtime_offset: float) -> bool:
        """Read and shape one frame; False if there was none."""
        sock = port.sock
        flow = port.flow
        arrival = now
        try:
            if self.kernel_timestamps:
                frame, anc, _, addr = sock.recvmsg(port.bufsize, CMSG_SPACE)
                if anc:
                    sec, nsec = TIMESPEC.unpack_from(anc[0][2])
                    # Frames that waited in the socket before the wire started reading (sent
                    # while the testbed came up) count from then: that wait is not link delay.
                    arrival = min(now, max(self._reading_since, sec - realtime_offset + nsec * 1e-9))
                if not port.filtered and addr[2] == PACKET_OUTGOING:  # our own send, seen again
                    return True
            elif port.filtered:
                frame = sock.recv(port.bufsize)
            else:
                frame, addr = sock.recvfrom(port.bufsize)
                if addr[2] == PACKET_OUTGOING:
                    return True
        except BlockingIOError:
            return False
        except OSError as exc:  # e.g. the interface went away; keep running
            log.warning("recv on %s/%s failed: %s", flow.link_id, flow.which, exc)
            return False
        stats = flow.stats
        stats.received += 1
        release = flow.shaper.admit(arrival, len(frame))
        if release.__class__ is float:
            if flow.queued == 0 and release <= now:  # nothing ahead, no delay: send now
                self._send(flow, frame, release, now)  # type: ignore[arg-type]
                return True
            self._seq += 1
            heapq.heappush(self._heap, (release, self._seq, flow, frame))  # type: ignore[arg-type]
            flow.queued += 1
        elif release is Verdict.LOST:
            stats.lost += 1
        elif release is Verdict.QUEUE_DROP:
            stats.queue_drops += 1
        else:
            stats.dropped_down += 1
        return True

    def _release_due(self) -> None:
        heap = self._heap
        while heap:
            now = time.monotonic()
            if heap[0][0] > now + EARLY_S:
                break
            release, _, flow, frame = heapq.heappop(heap)
            flow.queued -= 1
            if not flow.shaper.up:  # the link went down while the frame was in flight
                flow.stats.dropped_down += 1
                continue
            self._send(flow, frame, release, now)

    def _send(self, flow: Flow, frame: bytes, release: float, now: float) -> None:
        try:
            flow.out.send(frame)
        except OSError:  # ENOBUFS/EAGAIN under overload, ENETDOWN when the peer is gone
            flow.stats.send_errors += 1
            return
        stats = flow.stats
        stats.forwarded += 1
        stats.bytes_forwarded += len(frame)
        stats.lateness.observe(now - release)

    def _arm(self, when: float) -> None:
        assert self._timer is not None
        self._timer.arm_at(when)
        self._armed = when

    # -- control ------------------------------------------------------------------------------

    def link(self, link_id: str) -> WireLink:
        try:
            return self.links[link_id]
        except KeyError:
            raise KeyError(f"no link {link_id!r} in this wire process") from None

    def configure(self, link_id: str, forward: Direction | None, reverse: Direction | None) -> None:
        link = self.link(link_id)
        if forward is not None:
            link.forward.shaper.configure(forward)
        if reverse is not None:
            link.reverse.shaper.configure(reverse)

    def set_up(self, link_id: str, up: bool) -> None:
        link = self.link(link_id)
        link.forward.shaper.up = up
        link.reverse.shaper.up = up

    def stats(self) -> dict[str, object]:
        links = {}
        for link_id, link in self.links.items():
            links[link_id] = {
                "up": link.up,
                "a_if": link.spec.a_if,
                "b_if": link.spec.b_if,
                "config": {
                    "forward": direction_to_dict(link.forward.shaper.direction),
                    "reverse": direction_to_dict(link.reverse.shaper.direction),
                },
                "forward": link.forward.stats.to_dict(link.forward.queued),
                "reverse": link.reverse.stats.to_dict(link.reverse.queued),
            }
        return {"uptime_s": time.monotonic() - self.started, "links": links}
