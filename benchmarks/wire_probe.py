"""Timestamped UDP probes for measuring one-way delay and loss through the wire.

    wire_probe.py send --dst IP --port P --pps R --count N [--size B]
    wire_probe.py recv --bind IP --port P --count N --deadline S      (prints JSON to stdout)
    wire_probe.py blast --dsts IP,IP,... --pps-each R --seconds S      (background load)

The sender puts (seq, CLOCK_REALTIME ns just before sendto) in each datagram and prints the
kernel's own send time per seq (SO_TIMESTAMPING, TX_SCHED: when the datagram entered its device
queue) as JSON; the receiver takes the kernel's receive timestamp (SO_TIMESTAMPNS, also
CLOCK_REALTIME) so its own wake-up latency is not counted. Both run on the same machine, so they share one clock; one-way delay is
rx_kernel - tx_user, which includes both kernels' stacks and the veths as well as the wire.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import struct
import sys
import time

HEADER = struct.Struct("!QQ")
SO_TIMESTAMPNS = 35
SO_TIMESTAMPING = 37
# The kernel's own send time: stamped when the datagram enters the sender's device queue
# (dev_queue_xmit, just before the veth hands it on), reported on the socket's error queue with
# the datagram's number (OPT_ID counts datagrams from 0, like seq).
SOF_TIMESTAMPING_TX_SCHED = 1 << 8
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
IP_RECVERR = 11
TIMESPEC = struct.Struct("@qq")
EXTENDED_ERR = struct.Struct("=IBBBBII")  # sock_extended_err: errno, origin, type, code, pad, info, data


def _drain_tx_stamps(sock: socket.socket, stamps: dict[int, int]) -> None:
    while True:
        try:
            _, anc, _, _ = sock.recvmsg(64, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        ns = ident = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
                sec, nsec = TIMESPEC.unpack_from(payload, 0)  # ts[0]: the software stamp
                ns = sec * 1_000_000_000 + nsec
            elif level == socket.SOL_IP and kind == IP_RECVERR:
                ident = EXTENDED_ERR.unpack_from(payload)[6]
        if ns is not None and ident is not None:
            stamps[ident] = ns


def send(dst: str, port: int, pps: float, count: int, size: int) -> dict[str, int]:
    """Returns the kernel send time (CLOCK_REALTIME ns) per seq, as far as the kernel reported it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(
        socket.SOL_SOCKET,
        SO_TIMESTAMPING,
        SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY,
    )
    pad = b"\0" * max(0, size - HEADER.size)
    interval = 1.0 / pps
    start = time.monotonic()
    stamps: dict[int, int] = {}
    for seq in range(count):
        due = start + seq * interval
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sock.sendto(HEADER.pack(seq, time.time_ns()) + pad, (dst, port))
        _drain_tx_stamps(sock, stamps)
    time.sleep(0.05)
    _drain_tx_stamps(sock, stamps)
    sock.close()
    return {str(k): v for k, v in stamps.items()}


def blast(dsts: list[str], port: int, pps_each: float, seconds: float) -> None:
    """Background load: pps_each datagrams/s to every address, paced in 1 ms rounds. Nothing
    listens on the far side; the kernel drops them (its ICMP errors are rate-limited)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"\0" * 64
    targets = [(d, port) for d in dsts]
    round_s = 0.001
    per_round = pps_each * round_s
    start = time.monotonic()
    owed = 0.0
    rounds = int(seconds / round_s)
    behind_max = 5 * round_s
    for k in range(rounds):
        due = start + k * round_s
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif -wait > behind_max:
            # Starved for CPU: skip the missed rounds instead of sending them as one big burst
            # (the benchmark reports the load actually achieved).
            start += -wait
            continue
        owed += per_round
        while owed >= 1.0:
            owed -= 1.0
            for target in targets:
                try:
                    sock.sendto(payload, target)
                except OSError:
                    pass
    sock.close()


def recv(bind: str, port: int, count: int, deadline: float) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((bind, port))
    print("listening", file=sys.stderr, flush=True)
    end = time.monotonic() + deadline
    delays_ns: list[int] = []
    seqs: list[int] = []
    rx_by_seq: dict[int, int] = {}
    rx_first = rx_last = 0
    while len(seqs) < count:
        left = end - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data, anc, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(TIMESPEC.size))
        except TimeoutError:
            break
        rx_ns = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = TIMESPEC.unpack(payload[: TIMESPEC.size])
                rx_ns = sec * 1_000_000_000 + nsec
        if rx_ns is None:
            rx_ns = time.time_ns()
        rx_first = rx_first or rx_ns
        rx_last = rx_ns
        seq, tx_ns = HEADER.unpack_from(data)
        seqs.append(seq)
        delays_ns.append(rx_ns - tx_ns)
        rx_by_seq[seq] = rx_ns
    sock.close()
    reorders = sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    return {
        "received": len(seqs),
        "unique": len(set(seqs)),
        "reorders": reorders,
        "rx_first_ns": rx_first,
        "rx_last_ns": rx_last,
        "delays_ns": delays_ns,
        "rx_ns": {str(k): v for k, v in rx_by_seq.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("send")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, default=47000)
    s.add_argument("--pps", type=float, default=200)
    s.add_argument("--count", type=int, default=1000)
    s.add_argument("--size", type=int, default=64)
    r = sub.add_parser("recv")
    r.add_argument("--bind", default="0.0.0.0")
    r.add_argument("--port", type=int, default=47000)
    r.add_argument("--count", type=int, default=1000)
    r.add_argument("--deadline", type=float, default=30)
    b = sub.add_parser("blast")
    b.add_argument("--dsts", required=True, help="comma-separated addresses")
    b.add_argument("--port", type=int, default=9)
    b.add_argument("--pps-each", type=float, default=1000)
    b.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    if args.mode == "blast":
        blast(args.dsts.split(","), args.port, args.pps_each, args.seconds)
    elif args.mode == "send":
        json.dump({"tx_kernel_ns": send(args.dst, args.port, args.pps, args.count, args.size)}, sys.stdout)
    else:
        json.dump(recv(args.bind, args.port, args.count, args.deadline), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
