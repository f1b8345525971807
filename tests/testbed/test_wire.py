"""The wire end to end: two device namespaces joined by one emulated link (root, real netns).

One lab and one wire process for the module; each test sets the link config it needs first.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.wire_lab import WireLab
from toolkit.errors import RunError
from toolkit.wire.control import WireClient

pytestmark = pytest.mark.netns

ZERO = {"delay_ms": 0, "jitter_ms": 0, "loss_pct": 0, "loss_burst": 1, "rate_kbit": None, "reorder": False}


@pytest.fixture(scope="module")
def lab() -> Iterator[WireLab]:
    with WireLab(links=1) as lab:
        lab.start_wire(lab.spec({0: ({"delay_ms": 10}, {"delay_ms": 10})}))
        yield lab


@pytest.fixture
def client(lab: WireLab) -> Iterator[WireClient]:
    with WireClient(lab.control) as c:
        yield c


def ping(lab: WireLab, count: int, interval: str = "0.02", flood: bool = False) -> tuple[int, int, list[float]]:
    """(transmitted, received, [min, avg, max]) of a ping from device A to device B."""
    args = ["ping", "-n", "-q", "-c", str(count), "-W", "1"]
    args += ["-f"] if flood else ["-i", interval]
    out = lab.in_a(*args, lab.addr_b(0), check=False).stdout
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", out)
    return int(m[1]), int(m[2]), [float(x) for x in rtt.groups()] if rtt else []


def counters(client: WireClient, which: str) -> dict[str, int]:
    d = client.stats()["links"]["l0"][which]
    return {k: v for k, v in d.items() if isinstance(v, int)}


def test_delay_10ms_each_way_gives_20ms_rtt(lab: WireLab, client: WireClient) -> None:
    client.set_link("l0", forward={**ZERO, "delay_ms": 10}, reverse={**ZERO, "delay_ms": 10})
    ping(lab, 2)  # warm up ARP
    sent, got, (rmin, ravg, _) = ping(lab, 30)
    assert got == sent == 30
    assert 20.0 <= rmin <= 23.0
    assert 20.0 <= ravg <= 23.0


def test_random_loss_20pct(lab: WireLab, client: WireClient) -> None:
    client.set_link("l0", forward={**ZERO, "loss_pct": 20}, reverse=ZERO)
    ping(lab, 2)
    before = counters(client, "forward")
    sent, got, _ = ping(lab, 2000, interval="0.001")
    loss = 100.0 * (sent - got) / sent
    assert 15.0 <= loss <= 25.0
    after = counters(client, "forward")
    assert after["lost"] - before["lost"] == sent - got  # the lab has static ARP: no other frames


def test_rate_5mbit_with_tcp(lab: WireLab, client: WireClient) -> None:
    client.set_link("l0", forward={**ZERO, "delay_ms": 5, "rate_kbit": 5000}, reverse={**ZERO, "delay_ms": 5})
    server = lab.in_b("iperf3", "-s", "-1", "-D", "-B", lab.addr_b(0))
    assert server.returncode == 0
    time.sleep(0.3)
    out = lab.in_a("iperf3", "-J", "-c", lab.addr_b(0), "-t", "3", check=False)
    result = json.loads(out.stdout)
    assert "error" not in result, result.get("error")
    mbit = result["end"]["sum_received"]["bits_per_second"] / 1e6
    # TCP goodput at 5 Mbit/s of Ethernet frames is ~4.8 Mbit/s (1448 of 1514 bytes).
    assert 4.5 <= mbit <= 5.2


def test_tcp_unlimited_passes(lab: WireLab, client: WireClient) -> None:
    """The offload trap: with offloads on, ping works and TCP hangs."""
    client.set_link("l0", forward=ZERO, reverse=ZERO)
    assert lab.in_b("iperf3", "-s", "-1", "-D", "-B", lab.addr_b(0)).returncode == 0
    time.sleep(0.3)
    out = lab.in_a("iperf3", "-J", "-c", lab.addr_b(0), "-n", "20M", check=False)
    result = json.loads(out.stdout)
    assert "error" not in result, result.get("error")
    assert result["end"]["sum_sent"]["bytes"] >= 20 * 2**20
    # The receiver's figure is taken when the sender finishes; megabytes may still be in flight.
    assert result["end"]["sum_received"]["bytes"] >= 5_000_000


def test_full_mtu_frames_cross(lab: WireLab, client: WireClient) -> None:
    client.set_link("l0", forward=ZERO, reverse=ZERO)
    out = lab.in_a("ping", "-n", "-q", "-c", "3", "-i", "0.05", "-s", "1472", "-M", "do", lab.addr_b(0), check=False)
    assert " 3 received" in out.stdout, out.stdout + out.stderr


def test_a_stalled_wire_counts_what_its_ring_could_not_hold(lab: WireLab, client: WireClient) -> None:
    client.set_link("l0", forward=ZERO, reverse=ZERO)
    before = counters(client, "forward")
    sent = 600
    assert lab.wire is not None
    os.kill(lab.wire.pid, signal.SIGSTOP)
    try:
        blast = f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range({sent}): s.sendto(b'x', ('{lab.addr_b(0)}', 47101))"
        lab.in_a(sys.executable, "-c", blast)
    finally:
        os.kill(lab.wire.pid, signal.SIGCONT)
    time.sleep(0.5)
    after = counters(client, "forward")
    received = after["received"] - before["received"]
    dropped = after["ring_drops"] - before["ring_drops"]
    assert received + dropped == sent  # every frame is accounted for, once
    assert 0 < received < sent and dropped > 0


RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 47100))
s.settimeout(3)
print("ready", flush=True)
seqs = []
try:
    while len(seqs) < int(sys.argv[2]):
        seqs.append(int(s.recv(64)))
except TimeoutError:
    pass
print(",".join(map(str, seqs)))
"""

SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(str(i).encode(), (sys.argv[1], 47100))
    time.sleep(0.0005)
"""


def udp_order(lab: WireLab, count: int) -> list[int]:
    """Sequence numbers of `count` datagrams sent A->B every ~0.5 ms, in arrival order."""
    recv = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns_b, sys.executable, "-c", RECEIVER, lab.addr_b(0), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
        lab.in_a(sys.executable, "-c", SENDER, lab.addr_b(0), str(count))
        out, _ = recv.communicate(timeout=20)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    return [int(x) for x in out.strip().split(",") if x]


def test_jitter_keeps_order_unless_reorder(lab: WireLab, client: WireClient) -> None:
    client.set_link("l0", forward={**ZERO, "delay_ms": 10, "jitter_ms": 4}, reverse=ZERO)
    seqs = udp_order(lab, 400)
    assert seqs == list(range(400))
    client.set_link("l0", forward={"reorder": True})
    seqs = udp_order(lab, 400)
    assert sorted(seqs) == list(range(400))
    assert seqs != list(range(400))  # 4 ms of jitter on 0.5 ms spacing must reorder some


def test_runtime_control_delay_down_up_and_counters(lab: WireLab, client: WireClient) -> None:
    client.set_link("l0", forward={**ZERO, "delay_ms": 10}, reverse={**ZERO, "delay_ms": 10})
    ping(lab, 2)
    reply = client.set_link("l0", forward={"delay_ms": 40})
    assert reply["config"]["forward"]["delay_ms"] == 40
    assert reply["config"]["reverse"]["delay_ms"] == 10  # the other direction is untouched
    _, got, (rmin, _, _) = ping(lab, 10)
    assert got == 10 and 50.0 <= rmin <= 54.0

    client.set_up("l0", False)
    before = counters(client, "forward")
    sent, got, _ = ping(lab, 10, interval="0.05")
    assert got == 0
    assert counters(client, "forward")["dropped_down"] - before["dropped_down"] >= sent
    assert client.stats()["links"]["l0"]["up"] is False

    client.set_up("l0", True)
    ping(lab, 2)
    fwd0, rev0 = counters(client, "forward"), counters(client, "reverse")
    sent, got, _ = ping(lab, 20)
    assert sent == got == 20
    fwd1, rev1 = counters(client, "forward"), counters(client, "reverse")
    # Exactly our echo requests and replies crossed (no other traffic in these namespaces).
    assert fwd1["forwarded"] - fwd0["forwarded"] == 20
    assert rev1["forwarded"] - rev0["forwarded"] == 20
    assert fwd1["received"] - fwd0["received"] == 20
    lateness = client.stats()["links"]["l0"]["forward"]["lateness"]
    assert lateness["count"] == fwd1["forwarded"] and lateness["max_s"] >= 0


def test_bad_requests_get_errors_and_the_wire_keeps_running(lab: WireLab, client: WireClient) -> None:
    client.set_link("l0", forward={**ZERO, "delay_ms": 1}, reverse=ZERO)
    bad = [
        b"not json",
        b"[1, 2]",
        b'{"op": "fly"}',
        b'{"op": "set", "link": "nope", "forward": {"delay_ms": 1}}',
        b'{"op": "down"}',
        b'{"op": "set", "link": "l0", "forward": {"delay_ms": -5}}',
        b'{"op": "set", "link": "l0", "forward": {"delay_ms": 7}, "reverse": {"colour": 1}}',
        b'{"op": "set", "link": "l0", "forward": 3}',
        b"\xff\xfe",
    ]
    for line in bad:
        reply = client.request_raw(line)
        assert set(reply) == {"error"}, (line, reply)
    # The half-valid set changed nothing.
    assert client.stats()["links"]["l0"]["config"]["forward"]["delay_ms"] == 1
    with pytest.raises(RunError, match="no link"):
        client.set_up("nope", True)
    # An over-long line gets an error and only that connection is closed.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(5)
        raw.connect(str(lab.control))
        try:
            raw.sendall(b"x" * (2 << 20) + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the wire stopped reading this connection after 1 MiB, as it should
        assert b"error" in raw.recv(4096)
    assert client.ping()["ok"] is True
    assert lab.wire is not None and lab.wire.alive()
    assert ping(lab, 3)[1] == 3


def test_stop_op_sigterm_and_restart(lab: WireLab) -> None:
    assert lab.wire is not None
    with WireClient(lab.control) as c:
        c.stop()
    assert lab.wire.wait(timeout=10) == 0
    assert not lab.control.exists()

    lab.start_wire(lab.spec({0: ({"delay_ms": 2}, {"delay_ms": 2})}))
    assert ping(lab, 3)[1] == 3
    assert lab.wire.stop() == 0  # SIGTERM
    assert not lab.control.exists()

    lab.start_wire(lab.spec())  # leave a running wire for the fixture's teardown
    assert WireClient(lab.control).ping()["ok"]


def test_bad_spec_fails_with_the_log_tail(lab: WireLab) -> None:
    spec = lab.workdir / "bad.json"
    spec.write_text('{"links": [{"id": "x", "a_if": "nosuchif0", "b_if": "nosuchif1"}]}')
    from toolkit.targets import NetnsTarget
    from toolkit.wire.launch import WireProcess

    with pytest.raises(RunError, match="nosuchif0"):
        WireProcess.start(
            NetnsTarget(lab.ns_w, lab.ns_w), spec, lab.workdir / "bad.sock", lab.workdir / "bad.log", timeout=10
        )
    assert not (lab.workdir / "bad.sock").exists()
