"""Emulated testbeds on this machine: real namespaces, real veths, the real wire. Root only."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from toolkit.testbed import naming
from toolkit.testbed.state import TestbedState

from .conftest import CLI, SMALL, leftovers, line, two_sites

pytestmark = pytest.mark.netns


def rtt_avg_ms(out: str) -> float:
    m = re.search(r"= [\d.]+/([\d.]+)/", out)
    assert m, out
    return float(m.group(1))


def loss_pct(out: str) -> float:
    m = re.search(r"([\d.]+)% packet loss", out)
    assert m, out
    return float(m.group(1))


def test_wire_line_delay_loss_rate_and_tcp(testbeds, cli):
    tb = testbeds.up(line(3, delay_ms=10, profile=SMALL), shaper="wire")
    # the in-process namespace operations took effect: forwarding on, offloads off on both ends
    assert tb.exec("d1", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    link = tb.plan.link("d0", "d1")
    for ns, ifname in ((link.a.netns, link.a.ifname), (tb.plan.wire_netns, link.a.wire_if)):
        k = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-k", ifname], capture_output=True, text=True).stdout
        for feature in (
            "tx-checksumming",
            "tcp-segmentation-offload",
            "generic-segmentation-offload",
            "generic-receive-offload",
        ):
            assert f"{feature}: off" in k, (ifname, feature, k)
    # names resolve inside every device; the first ping warms ARP along the path
    warm = tb.exec("d0", ["ping", "-c", "2", "-i", "0.2", "d2"])
    assert warm.returncode == 0, warm.stdout + warm.stderr
    r = tb.exec("d0", ["ping", "-c", "20", "-i", "0.05", "-q", "d2"])
    assert loss_pct(r.stdout) == 0
    assert 40 <= rtt_avg_ms(r.stdout) <= 43, r.stdout

    # 20 % loss on one direction of one link: 15-25 % of 2,000 pings are lost
    tb.set_link("d0", "d1", one_way=True, loss_pct=20)
    # (-l: without a preload, ping slows down to ~100/s once replies go missing)
    r = tb.exec("d0", ["ping", "-c", "2000", "-i", "0.002", "-l", "30", "-W", "1", "-q", "d2"], timeout=60)
    assert 15 <= loss_pct(r.stdout) <= 25, r.stdout
    tb.set_link("d0", "d1", loss_pct=0)

    # a 5 Mbit/s link carries 4.5-5.2 Mbit/s of TCP (and TCP works across the wire at all)
    tb.set_link("d1", "d2", rate_kbit=5000)
    server = tb.popen(
        "d2", ["iperf3", "-s", "-1", "-B", tb.address("d2")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(0.5)
        r = tb.exec("d0", ["iperf3", "-c", "d2", "-t", "5", "-O", "1", "-J"], timeout=30)
        assert r.returncode == 0, r.stdout[-500:] + r.stderr
        mbit = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
        assert 4.5 <= mbit <= 5.2, mbit
    finally:
        server.wait(timeout=10)

    stats = tb.link_stats()
    fwd = stats["d1~d2"]["forward"]
    assert fwd["forwarded"] > 1000 and "lateness" in fwd
    assert stats["d0~d1"]["forward"]["lost"] > 200

    # a delay change applies at once; `status --links` shows the wire's counters
    tb.set_link("d0", "d1", delay_ms=30)
    r = tb.exec("d0", ["ping", "-c", "5", "-i", "0.1", "-q", "d2"])
    assert 80 <= rtt_avg_ms(r.stdout) <= 84, r.stdout
    st = cli("status", tb.id, "--links", "--json")
    assert st.returncode == 0, st.stderr
    links = json.loads(st.stdout)["link_stats"]
    assert links["d0~d1"]["configured"]["forward"]["delay_ms"] == 30
    assert links["d0~d1"]["reverse"]["lateness"]["count"] > 0

    # the CLI returns a link to an unlimited rate and turns reordering on; the wire applies both
    r = cli("link", "set", tb.id, "d1", "d2", "--unlimited", "--reorder")
    assert r.returncode == 0, r.stderr
    wire = tb.link_stats()["d1~d2"]
    assert wire["configured"]["forward"]["rate_kbit"] is None and wire["configured"]["reverse"]["reorder"]
    assert wire["config"]["forward"]["rate_kbit"] is None  # what the wire process itself now holds
    assert wire["config"]["reverse"]["reorder"] is True
    r = cli("link", "set", tb.id, "d1", "d2", "--rate-kbit", "0", "--delay-ms", "-1")
    assert r.returncode == 2  # a negative delay is bad input, and nothing changed
    assert tb.link_stats()["d1~d2"]["configured"]["forward"]["delay_ms"] == 10


def test_devices_management_cgroups_and_two_testbeds(testbeds):
    a = testbeds.up(line(3, delay_ms=0, profile=SMALL), shaper="none")
    b = testbeds.up(line(2, delay_ms=0), shaper="none")
    assert a.plan.mgmt_subnet != b.plan.mgmt_subnet
    for tb in (a, b):
        for dev in tb.plan.devices:  # the root namespace reaches every management address
            # (two tries: on a loaded machine the first may leave before ARP has resolved)
            r = subprocess.run(["ping", "-c", "2", "-i", "0.5", "-W", "2", tb.mgmt_address(dev)], capture_output=True)
            assert r.returncode == 0, (tb.id, dev)
    r = a.exec("d0", ["ping", "-c", "1", "-W", "1", "d2"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = a.exec("d0", ["ping", "-6", "-c", "1", "-W", "1", "d2.v6"])
    assert r.returncode == 0, r.stdout + r.stderr
    # a command runs in the device's cgroup, with its limits
    cg = a.exec("d1", ["cat", "/proc/self/cgroup"]).stdout
    assert f"cpu:/cnlab-{a.id}/cn{a.id}d1" in cg and f"memory:/cnlab-{a.id}/cn{a.id}d1" in cg
    limit = Path(f"/sys/fs/cgroup/memory/cnlab-{a.id}/cn{a.id}d1/memory.limit_in_bytes").read_text()
    assert int(limit) == 128 << 20
    # no default route, nothing off the machine
    assert "default" not in a.exec("d1", ["ip", "route"]).stdout
    # taking one testbed down leaves the other alone
    a.down()
    assert leftovers(a.id) == []
    assert b.exec("d0", ["ping", "-c", "1", "-W", "1", "d1"]).returncode == 0


@pytest.mark.parametrize("shaper", ["wire", "none"])
def test_partition_and_heal(testbeds, shaper):
    tb = testbeds.up(two_sites(), shaper=shaper)

    def ok(a: str, b: str) -> bool:
        return tb.exec(a, ["ping", "-c", "1", "-W", "1", b]).returncode == 0

    def routes() -> dict[str, list[str]]:
        out = {}
        for name in tb.plan.devices:
            text = tb.exec(name, ["ip", "route"]).stdout + tb.exec(name, ["ip", "-6", "route"]).stdout
            out[name] = sorted(text.splitlines())
        return out

    assert ok("w1", "w2") and ok("w1", "e3") and ok("w1", "w3")
    at_up = routes()
    cut = tb.partition(["west", "east"])
    assert sorted(cut) == sorted(lk.id for lk in tb.plan.links if {lk.a.device[0], lk.b.device[0]} == {"w", "e"})
    assert len(cut) == 3
    assert not ok("w1", "e1") and not ok("w3", "e2") and not ok("e3", "w3")
    # inside each site traffic still flows, also w1 -> w3 whose path crossed the east site
    assert ok("w1", "w3") and ok("w1", "w2") and ok("e1", "e3") and ok("e2", "e1")
    assert tb.status()["links_cut"] == sorted(cut)
    e1 = tb.address("e1")
    assert not [r for r in routes()["w1"] if r.startswith(e1 + " ")]
    assert tb.last_timings["route_changes"] > 0 and tb.last_timings["devices_changed"] == 6
    tb.heal()
    assert routes() == at_up  # the routes of `up`, exactly
    assert ok("w1", "e1") and ok("w3", "e2") and ok("w1", "w3")
    # a single link down and up
    tb.set_link_up("w1", "e1", False)
    assert not ok("w1", "e1")
    tb.set_link_up("w1", "e1", True)
    assert ok("w1", "e1")


def _kill_up_halfway(cli_env: dict, tid: str, state: TestbedState, when: str) -> None:
    topo = Path(__file__).resolve().parents[2] / "experiments" / "topologies" / "two-sites.yaml"
    proc = subprocess.Popen(
        [CLI, "up", str(topo), "--id", tid, "--shaper", "wire"],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if when == "wire starting":  # a wire process exists, not yet ready nor journalled
                if any(w.startswith("process") for w in leftovers(tid)):
                    break
            elif when in {r["kind"] for r in state.resources()}:
                break
            assert proc.poll() is None, "up finished before it could be killed"
            time.sleep(0.005)
        else:
            pytest.fail(f"no {when} in the journal after 30 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("when", ["netns", "wire starting"])
def test_down_after_up_was_killed_halfway(cli, state_dir, when):
    tid = naming.random_id()
    state = TestbedState(tid, state_dir)
    env = {**os.environ, "CNLAB_STATE_DIR": str(state_dir)}
    try:
        _kill_up_halfway(env, tid, state, when)
        st = cli("status", "--json")
        assert json.loads(st.stdout)[0]["phase"].startswith("broken"), st.stdout
        r = cli("down", tid)
        assert r.returncode == 0, r.stderr
        assert leftovers(tid) == []
        assert not state.exists
    finally:
        if state.exists:
            cli("down", tid)


def test_cli_up_status_exec_down(cli):
    topo = Path(__file__).resolve().parents[2] / "experiments" / "topologies" / "line-3.yaml"
    tid = naming.random_id()
    try:
        r = cli("up", topo, "--id", tid, "--shaper", "none")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == tid
        again = cli("up", topo, "--id", tid, "--shaper", "none")
        assert again.returncode == 2 and "already in use" in again.stderr
        st = json.loads(cli("status", "--json").stdout)
        assert [s["id"] for s in st] == [tid] and st[0]["phase"] == "up"
        r = cli("exec", tid, "a", "--", "ping", "-c", "1", "-W", "1", "c")
        assert r.returncode == 0, r.stdout + r.stderr
        r = cli("status", tid, "--links", "--json")
        assert "a~b" in json.loads(r.stdout)["link_stats"]
        r = cli("link", "set", tid, "a", "b", "--delay-ms", "5")
        assert r.returncode == 1 and "without a shaper" in r.stderr
        r = cli("exec", tid, "nope", "--", "true")
        assert r.returncode == 2
        from toolkit import capabilities

        if not capabilities.has_netem():  # this machine: netem forced on a kernel without it
            r = cli("up", topo, "--shaper", "netem")
            assert r.returncode == 1 and "no sch_netem" in r.stderr, r.stderr
    finally:
        r = cli("down", tid)
    assert r.returncode == 0, r.stderr
    assert leftovers(tid) == []
    assert cli("down", tid).returncode == 2


@pytest.mark.parametrize("shaper", ["wire", "none"])
def test_babeld_routing_converges(testbeds, shaper):
    # babeld comes with `cnlab doctor --fix` (make test); without it `up` fails, naming the package
    tb = testbeds.up(line(3, delay_ms=1), shaper=shaper, routing="babeld")
    conv = tb.state.meta["converged_s"]
    assert 0 < conv < 60
    # a loaded machine can delay hellos enough for a route to flap once: up to 5 tries, 1 s apart
    for _ in range(5):
        r = tb.exec("d0", ["ping", "-c", "1", "-W", "2", "d2"])
        if r.returncode == 0:
            break
        time.sleep(1)
    assert r.returncode == 0, r.stdout + r.stderr
    pids = [int(p) for p in tb.exec("d0", ["ip", "netns", "pids", tb.plan.devices["d0"].netns]).stdout.split()]
    tb.down()
    assert leftovers(tb.id) == []
    assert not any(os.path.exists(f"/proc/{p}") and "babeld" in Path(f"/proc/{p}/cmdline").read_text() for p in pids)


def test_failure_inside_up_rolls_back(state_dir):
    """A cpu quota the kernel refuses (10 us) fails `up` while other devices' cgroups and hosts
    files are being created: everything created so far goes, and the id is free again."""
    from toolkit.errors import RunError
    from toolkit.testbed.testbed import Testbed
    from toolkit.topology.model import Profile

    topo = line(3, profile=Profile("tiny", 0.0001, 64))
    tid = naming.random_id()
    with pytest.raises(RunError):
        Testbed.up(topo, tid, shaper="none")
    assert leftovers(tid) == []
    assert not TestbedState(tid, state_dir).exists


def test_ffwien_comes_up_and_goes_without_a_trace(testbeds, ffwien):
    """The whole FFWien import (246 devices, 395 links), unshaped: far devices reach each other."""
    from toolkit.topology.netjson import import_netjson

    topo = import_netjson(ffwien)
    tb = testbeds.up(topo, shaper="none", ipv6=False)
    g = topo.graph()
    a = next(iter(topo.devices))
    far = max(
        (n for n in g if n != a and __import__("networkx").has_path(g, a, n)),
        key=lambda n: __import__("networkx").shortest_path_length(g, a, n),
    )
    r = tb.exec(a, ["ping", "-c", "1", "-W", "2", far])
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(tb.plan.devices) == 246 and len(tb.plan.links) == 395
    tb.down()
    assert leftovers(tb.id) == []


def test_two_ups_at_once_get_their_own_names_and_subnets(cli, state_dir):
    topo = Path(__file__).resolve().parents[2] / "experiments" / "topologies" / "line-3.yaml"
    env = {**os.environ, "CNLAB_STATE_DIR": str(state_dir)}
    ids = [naming.random_id(), naming.random_id()]
    procs = [
        subprocess.Popen(
            [CLI, "up", str(topo), "--id", tid, "--shaper", "none"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tid in ids
    ]
    try:
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        st = {s["id"]: s for s in (json.loads(cli("status", tid, "--json").stdout) for tid in ids)}
        assert st[ids[0]]["mgmt_subnet"] != st[ids[1]]["mgmt_subnet"]
        for tid in ids:
            r = cli("exec", tid, "a", "--", "ping", "-c", "1", "-W", "1", "c")
            assert r.returncode == 0, r.stderr
    finally:
        for tid in ids:
            cli("down", tid)
    assert leftovers(ids[0]) == [] and leftovers(ids[1]) == []
