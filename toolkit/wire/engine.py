"""The forwarding engine: frames in on one veth end, shaped, out on the other.

One asyncio loop. Each wire-side end has an AF_PACKET socket whose receive ring is mapped into
this process (wire_ring); all of them and the timer sit in one inner epoll set, which asyncio
watches as a single reader (one asyncio callback per wake-up instead of one per socket).
Admitted frames go into ONE heap ordered by release time (all links and directions together),
and ONE timerfd is armed for the earliest release; when it fires, every frame that is due is
sent. So the cost is O(log n) per frame and one wake-up per batch of due frames, not one asyncio
timer per frame.

A wake-up works in short passes: each pass reads a few frames from every ready ring (about
PASS_FRAMES in all) and then sends what is due. So after a stall (this machine's hypervisor
sometimes takes the CPU away for tens of ms) a backlog on busy links cannot hold up the
releases, nor the frames of a quiet link, for longer than one short pass.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import select
import socket
import time
from dataclasses import dataclass, field

from toolkit.topology.direction import direction_to_dict
from toolkit.topology.model import Direction
from toolkit.wire.linux import TimerFd, interface_mtu
from toolkit.wire.ring import DEFAULT_SLOTS, RxRing
from toolkit.wire.shaping import Shaper, Verdict, make_rng
from toolkit.wire.spec import LinkSpec, WireSpec
from toolkit.wire.stats import DirectionStats

# Passes over the ready sockets per asyncio wake-up, and events per pass; after that, control
# requests get a turn (asyncio calls us again at once if frames are still waiting).
MAX_PASSES = 64
MAX_EVENTS = 256
# Frames read per pass, shared among the ready rings (at least one each): about 1 ms of work.
PASS_FRAMES = 64
# Frames due within this much of now are sent in the same wake-up (a second wake-up would
# cost more than releasing them a few microseconds early).
EARLY_S = 0.00002


@dataclass(eq=False)
class Flow:
    """One direction of one link: frames read from `source` (one end's ring) leave on `out`
    (the other end's socket)."""

    link_id: str
    which: str  # "forward" | "reverse"
    shaper: Shaper
    out: socket.socket
    stats: DirectionStats = field(default_factory=DirectionStats)
    queued: int = 0
    source: RxRing | None = None

    def to_dict(self) -> dict[str, object]:
        ring_drops = self.source.collect_drops() if self.source is not None else 0
        return self.stats.to_dict(self.queued, ring_drops)


@dataclass(eq=False)
class WireLink:
    spec: LinkSpec
    forward: Flow
    reverse: Flow

    @property
    def up(self) -> bool:
        return self.forward.shaper.up


class Engine:
    def __init__(self, spec: WireSpec, kernel_timestamps: bool = True, ring_slots: int = DEFAULT_SLOTS):
        """kernel_timestamps: schedule each frame from the kernel's receive time (in its ring
        slot) rather than from when this process got round to reading it, so a late wake-up on
        the receive side does not add to the emulated delay. ring_slots: see wire_ring."""
        self.spec = spec
        self.kernel_timestamps = kernel_timestamps
        self.ring_slots = ring_slots
        self.links: dict[str, WireLink] = {}
        self._rings: list[RxRing] = []
        self._heap: list[tuple[float, int, Flow, bytes]] = []
        self._seq = 0
        self._armed = math.inf
        self._timer: TimerFd | None = None
        self._ep: select.epoll | None = None
        self._flows: dict[int, Flow] = {}  # by the file descriptor of its source ring
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
            a_ring = self._open(ls.a_if)
            b_ring = self._open(ls.b_if)
            fwd = Flow(
                ls.id, "forward", Shaper(ls.forward, make_rng(self.spec.seed, ls.id, "forward"), ls.up), b_ring.sock
            )
            rev = Flow(
                ls.id, "reverse", Shaper(ls.reverse, make_rng(self.spec.seed, ls.id, "reverse"), ls.up), a_ring.sock
            )
            self.links[ls.id] = WireLink(ls, fwd, rev)
            for ring, flow in ((a_ring, fwd), (b_ring, rev)):
                flow.source = ring
                self._flows[ring.sock.fileno()] = flow
                self._ep.register(ring.sock.fileno(), select.EPOLLIN)
        loop.add_reader(self._ep.fileno(), self._on_events)

    def mark_ready(self) -> None:
        """From now on the wire serves frames promptly; frames that arrived earlier (sent while
        the testbed came up) are timed from here, so their wait is not counted as lateness."""
        self._reading_since = time.monotonic()

    def _open(self, ifname: str) -> RxRing:
        ring = RxRing.open(ifname, interface_mtu(ifname), self.ring_slots)
        self._rings.append(ring)
        return ring

    def close(self) -> None:
        if self._ep is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._ep.fileno())
            self._ep.close()
            self._ep = None
        for ring in self._rings:
            ring.close()
        self._rings.clear()
        self._flows.clear()
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    # -- the data path ------------------------------------------------------------------------

    def _on_events(self) -> None:
        """asyncio saw our epoll fd readable: serve ready rings and the timer in short passes
        (see the module docstring). Level-triggered: a ring with frames left is ready again."""
        assert self._ep is not None and self._timer is not None
        poll = self._ep.poll
        flows = self._flows
        timer_fd = self._timer.fd
        for _ in range(MAX_PASSES):
            events = poll(0, MAX_EVENTS)
            if not events:
                break
            now = time.monotonic()
            offset = time.time() - now  # ring timestamps are CLOCK_REALTIME
            share = max(1, PASS_FRAMES // len(events))
            for fd, _ in events:
                if fd == timer_fd:
                    self._timer.consume()
                    self._armed = math.inf
                else:
                    self._read(flows[fd], share, now, offset)
            self._release_due()
        heap = self._heap
        if heap and heap[0][0] < self._armed:
            self._arm(heap[0][0])

    def _read(self, flow: Flow, limit: int, now: float, realtime_offset: float) -> None:
        """Read and shape up to `limit` frames from one ring."""
        assert flow.source is not None
        take = flow.source.take
        stats = flow.stats
        shaper = flow.shaper
        for _ in range(limit):
            got = take()
            if got is None:
                return
            frame, sec, nsec = got
            if self.kernel_timestamps:
                # Frames that waited before the wire started reading (sent while the testbed
                # came up) count from then: that wait is not link delay.
                arrival = min(now, max(self._reading_since, sec - realtime_offset + nsec * 1e-9))
            else:
                arrival = now
            stats.received += 1
            release = shaper.admit(arrival, len(frame))
            if release.__class__ is float:
                if flow.queued == 0 and release <= now:  # nothing ahead, no delay: send now
                    self._send(flow, frame, release, now)
                    continue
                self._seq += 1
                heapq.heappush(self._heap, (release, self._seq, flow, frame))
                flow.queued += 1
            elif release is Verdict.LOST:
                stats.lost += 1
            elif release is Verdict.QUEUE_DROP:
                stats.queue_drops += 1
            else:
                stats.dropped_down += 1

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

    def stats_header(self) -> dict[str, object]:
        ring_bytes = sum(len(ring.memory) for ring in self._rings)  # kernel memory, not in RSS
        return {"uptime_s": time.monotonic() - self.started, "ring_bytes": ring_bytes}

    def link_stats(self, link_id: str) -> dict[str, object]:
        link = self.link(link_id)
        return {
            "up": link.up,
            "a_if": link.spec.a_if,
            "b_if": link.spec.b_if,
            "config": {
                "forward": direction_to_dict(link.forward.shaper.direction),
                "reverse": direction_to_dict(link.reverse.shaper.direction),
            },
            "forward": link.forward.to_dict(),
            "reverse": link.reverse.to_dict(),
        }

    def stats(self) -> dict[str, object]:
        """Everything at once (see control.stats_pieces for how the control socket serves it)."""
        return {**self.stats_header(), "links": {link_id: self.link_stats(link_id) for link_id in self.links}}
