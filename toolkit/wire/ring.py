"""The receive ring of an AF_PACKET socket (PACKET_RX_RING, TPACKET_V2), mapped into the wire.

Why a ring: with recvmsg() every frame costs a system call, a second one (Python turns the
AF_PACKET source address into an interface name with an ioctl), and a failing read with an
exception when the socket is empty. With the ring the kernel writes frames and their receive
timestamps into shared memory, and reading one is a few memory accesses. Together that was
about a fifth of the wire's CPU under load (perf, 2026-11-22).

Each slot starts with a tpacket2_hdr; the kernel sets TP_STATUS_USER in it when the slot holds a
frame, and we hand the slot back by writing TP_STATUS_KERNEL. Slots are used in order, so one
index says where the next frame is. epoll reports the socket readable while the slot before the
kernel's position still belongs to us, i.e. while frames are unread.

The slot is handed back by a plain store after the frame was copied out. That is safe with
x86-64's memory order; on a CPU with a weaker one (arm64) it would need a barrier first, which
Python cannot express: the wire is only tested on x86-64.
"""

from __future__ import annotations

import mmap
import socket
import struct

from toolkit.errors import RunError

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23  # Linux >= 4.20: the kernel does not show us our own sends
SO_SNDBUFFORCE = 32
SO_TIMESTAMPNS = 35
SEND_BUFFER_BYTES = 8 * 1024 * 1024
TPACKET_V2 = 1
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
PACKET_OUTGOING = 4

# tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_sec, tp_nsec (the rest is VLAN data)
TPACKET2_HDR = struct.Struct("=IIIHHII")
# Before the frame's network header the kernel puts the 32-byte header, a 20-byte sockaddr_ll
# and at least 16 bytes for the link header, aligned to 16: 80 bytes (net/packet/af_packet.c).
SLOT_OVERHEAD = 80
SLL_PKTTYPE_OFFSET = 32 + 10  # sockaddr_ll.sll_pkttype, right after the aligned header
KERNEL_STATUS = struct.pack("=I", TP_STATUS_KERNEL)
TPACKET_STATS = struct.Struct("=II")  # tp_packets, tp_drops

DEFAULT_SLOTS = 128


def slot_size(mtu: int) -> int:
    """The smallest power of two that holds a whole frame of this MTU (Ethernet and VLAN
    header included) after the kernel's per-slot overhead: 2048 bytes for MTU 1500."""
    need = SLOT_OVERHEAD + 4 + mtu  # 4: a VLAN tag the kernel left in the frame
    size = 256
    while size < need:
        size <<= 1
    return size


class RxRing:
    """A wire-side veth end: its AF_PACKET socket (which the wire also sends on) and the socket's
    receive ring. `take()` returns the frames in arrival order."""

    @classmethod
    def open(cls, ifname: str, mtu: int, slots: int = DEFAULT_SLOTS) -> RxRing:
        """Everything is set up before bind(). Setting up the ring waits for an RCU grace period
        (about 9 ms here); on a socket that already captures (one created with a protocol, or
        bound), the ring's set-up and the bind each wait for another one."""
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise RunError(f"cannot open an AF_PACKET socket (root needed): {exc}") from exc
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER_BYTES)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                skip_outgoing = False
            except OSError:
                skip_outgoing = True
            # The kernel then stamps a frame when the veth hands it over, before any wait in
            # the backlog queue (otherwise when it is written into the ring).
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            ring = cls(sock, mtu, skip_outgoing, slots)
            try:
                sock.bind((ifname, ETH_P_ALL))
                sock.setblocking(False)
            except OSError:
                ring.memory.close()
                raise
        except OSError as exc:
            sock.close()
            raise RunError(f"cannot open an AF_PACKET socket with a receive ring on {ifname}: {exc}") from exc
        return ring

    def __init__(self, sock: socket.socket, mtu: int, skip_outgoing: bool, slots: int = DEFAULT_SLOTS):
        """skip_outgoing: the kernel also shows us our own sends (no PACKET_IGNORE_OUTGOING
        before Linux 4.20); leave those out."""
        self.sock = sock
        self.skip_outgoing = skip_outgoing
        self.slot = slot_size(mtu)
        block = max(mmap.PAGESIZE, self.slot)
        per_block = block // self.slot
        blocks = max(1, -(-slots // per_block))
        self.slots = blocks * per_block
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, struct.pack("=i", TPACKET_V2))
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("=IIII", block, blocks, self.slot, self.slots))
        self.memory = mmap.mmap(sock.fileno(), block * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.next = 0  # the slot the next frame will be in
        self.dropped = 0  # frames the kernel could not put in the ring (it was full)
        self.truncated = 0  # frames longer than a slot (offloads left on), skipped

    def take(self) -> tuple[bytes, int, int] | None:
        """(frame, receive time as CLOCK_REALTIME seconds and nanoseconds) of the next frame, or
        None if the ring holds none. Its slot is handed back to the kernel at once."""
        memory = self.memory
        while True:
            offset = self.next * self.slot
            status, length, snaplen, mac, _net, sec, nsec = TPACKET2_HDR.unpack_from(memory, offset)
            if not status & TP_STATUS_USER:
                return None
            frame = memory[offset + mac : offset + mac + snaplen]
            outgoing = self.skip_outgoing and memory[offset + SLL_PKTTYPE_OFFSET] == PACKET_OUTGOING
            memory[offset : offset + 4] = KERNEL_STATUS
            self.next = (self.next + 1) % self.slots
            if snaplen < length:
                self.truncated += 1
            elif not outgoing:
                return frame, sec, nsec

    def collect_drops(self) -> int:
        """Frames lost at the ring since the socket opened: the ring was full, or a frame did not
        fit in a slot. (The kernel's counter resets on every read, so it is accumulated here.)"""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, TPACKET_STATS.size)
        self.dropped += TPACKET_STATS.unpack(raw)[1]
        return self.dropped + self.truncated

    def close(self) -> None:
        """Unmap the ring and close the socket."""
        self.memory.close()
        self.sock.close()
