"""Remote testbeds (every device `kind: ssh`): the plan, and the exact nft and tc text faults send
to devices, checked with a recording fake runtime (no root, no SSH). The real run is in
tests/deploy/test_remote_testbed.py."""

from __future__ import annotations

import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from toolkit.errors import InputError
from toolkit.testbed import remote
from toolkit.testbed.remote_faults import (
    Capabilities,
    FaultState,
    PeerShape,
    RemoteCommand,
    nft_script,
    parse_route_dev,
    tc_lines,
)
from toolkit.testbed.shapers import shaper_for
from toolkit.testbed.testbed import Testbed
from toolkit.topology.loader import load_topology
from toolkit.topology.model import Direction

from .conftest import CLI

TOPOLOGY = """name: fleet
devices:
  r1: {kind: ssh, host: 192.0.2.10, key: id_test, become: true, user: op}
  r2: {kind: ssh, host: 192.0.2.11, port: 2222, root: /srv/cnlab}
  r3: {kind: ssh, host: 2001:db8::3}
links:
  - {between: [r1, r2], delay_ms: 5}
  - {between: [r2, r3], up: false}
"""


@pytest.fixture
def topo(tmp_path: Path):
    path = tmp_path / "fleet.yaml"
    path.write_text(TOPOLOGY)
    return load_topology(path)


def plan_of(topo, tmp_path):
    return remote.plan_remote_testbed(topo, "r1", state_dir=str(tmp_path / "r1"), known_hosts=str(tmp_path / "kh"))


def test_plan_has_devices_with_their_ssh_targets_and_creates_nothing_here(topo, tmp_path):
    plan = plan_of(topo, tmp_path)
    assert plan.kind == "remote" and plan.shaper == "ssh" and plan.routing == "device"
    assert plan.phases() == [] and plan.namespaces() == []
    r1, r2 = plan.devices["r1"], plan.devices["r2"]
    assert r1.kind == "ssh" and r1.netns == "" and r1.cgroup is None and r1.deploy == "ansible"
    assert r1.ssh is not None and r1.ssh["become"] is True and r1.ssh["user"] == "op"
    assert r1.ssh["key"] == str(tmp_path / "id_test")  # relative to the topology file
    assert r2.ssh is not None and r2.ssh["root"] == "/srv/cnlab" and r2.ssh["port"] == 2222
    assert r1.mgmt_addr == r1.service_v4 == "192.0.2.10"
    # links are physical: not impaired at up, but a link may start down
    assert [(lk.id, lk.forward, lk.up) for lk in plan.links] == [
        ("r1~r2", Direction(), True),
        ("r2~r3", Direction(), False),
    ]
    ep = remote.endpoint(plan, "r2")
    assert (ep.host, ep.port, ep.user, ep.become) == ("192.0.2.11", 2222, "root", False)
    text = plan.summary()
    assert "op@192.0.2.10:22" in text and "root /srv/cnlab" in text and str(tmp_path / "kh") in text


def test_plan_round_trips_through_json(topo, tmp_path):
    from toolkit.testbed.plan import plan_from_json

    plan = plan_of(topo, tmp_path)
    again = plan_from_json(plan.to_json(routes=False))
    assert again == plan


def test_make_plan_chooses_remote_and_refuses_mixing(topo, tmp_path, monkeypatch):
    monkeypatch.setenv("CNLAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    plan = Testbed.make_plan(topo, "r9", probe=False)
    assert plan.kind == "remote"
    assert plan.known_hosts == str(tmp_path / "xdg" / "cnlab" / "fleets" / "fleet" / "known_hosts")
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text("name: mixed\ndevices:\n  e1: {}\n  r1: {kind: ssh, host: 192.0.2.1}\nlinks: []\n")
    with pytest.raises(InputError, match=r"mixes emulated and ssh devices \(emulated: e1; ssh: r1\)"):
        Testbed.make_plan(load_topology(mixed), "r8", probe=False)
    cp = subprocess.run([CLI, "up", "--dry-run", str(mixed)], capture_output=True, text=True, check=False)
    assert cp.returncode == 2 and "mixes emulated and ssh devices" in cp.stderr


def test_cli_dry_run_prints_the_remote_plan(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(TOPOLOGY)
    env_cp = subprocess.run(
        [CLI, "up", "--dry-run", "--id", "rz", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "CNLAB_STATE_DIR": str(tmp_path / "s"), "XDG_STATE_HOME": str(tmp_path)},
    )
    assert env_cp.returncode == 0, env_cp.stderr
    assert "remote: 3 real devices over SSH" in env_cp.stdout and "op@192.0.2.10:22" in env_cp.stdout
    assert not (tmp_path / "s" / "rz").exists()


# ---- the exact text sent to devices ------------------------------------------------------------
def test_nft_script_drops_both_ways_and_removes_the_table_when_nothing_is_down():
    text = nft_script(["192.0.2.11", "2001:db8::3", "192.0.2.9"])
    assert text.startswith("table inet cnlab_faults\ndelete table inet cnlab_faults\ntable inet cnlab_faults {\n")
    assert "set down4 { type ipv4_addr; elements = { 192.0.2.9, 192.0.2.11 }; }" in text
    assert "set down6 { type ipv6_addr; elements = { 2001:db8::3 }; }" in text
    assert "hook output priority 0; policy accept; ip daddr @down4 drop; ip6 daddr @down6 drop;" in text
    assert "hook input priority 0; policy accept; ip saddr @down4 drop; ip6 saddr @down6 drop;" in text
    assert nft_script([]) == "table inet cnlab_faults\ndelete table inet cnlab_faults\n"


def test_nft_script_is_valid_nftables(tmp_path):
    """`nft --check` parses the text (no root needed for a check on this kernel's nft)."""
    cp = subprocess.run(
        ["nft", "--check", "-f", "-"], input=nft_script(["192.0.2.11", "2001:db8::3"]), text=True, capture_output=True
    )
    if cp.returncode != 0 and "Operation not permitted" in cp.stderr:
        pytest.skip("nft --check needs CAP_NET_ADMIN here")
    assert cp.returncode == 0, cp.stderr


def test_tc_lines_shape_each_peer_in_its_own_class():
    slow = Direction(delay_ms=20, jitter_ms=5, loss_pct=1)
    capped = Direction(rate_kbit=1000)
    reset, lines = tc_lines("eth0", [PeerShape(0, "192.0.2.11", slow), PeerShape(3, "2001:db8::3", capped)])
    assert reset == ["qdisc del dev eth0 root"]
    assert lines == [
        "qdisc add dev eth0 root handle 1: htb default 1",
        "class add dev eth0 parent 1: classid 1:1 htb rate 10gbit",
        "class add dev eth0 parent 1: classid 1:2 htb rate 10gbit",
        "qdisc add dev eth0 parent 1:2 handle 100: netem delay 20ms 5ms loss random 1%",
        "filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst 192.0.2.11/32 flowid 1:2",
        "class add dev eth0 parent 1: classid 1:5 htb rate 10gbit",
        "qdisc add dev eth0 parent 1:5 handle 103: netem delay 0ms",
        "qdisc add dev eth0 parent 103:1 handle 1003: tbf rate 1000kbit burst 4096 latency 200ms",
        "filter add dev eth0 parent 1: protocol ipv6 prio 2 u32 match ip6 dst 2001:db8::3/128 flowid 1:5",
    ]
    # a direction back to the default leaves nothing: only the reset
    assert tc_lines("eth0", [PeerShape(0, "192.0.2.11", Direction())]) == (reset, [])


def test_parse_route_dev():
    assert parse_route_dev("192.0.2.11 dev eth1 src 192.0.2.10 uid 0 \\    cache") == "eth1"
    with pytest.raises(ValueError):
        parse_route_dev("RTNETLINK answers: Network is unreachable")


# ---- the ssh shaper with a recording fake ------------------------------------------------------
class FakeRemote:
    """A remote testbed's runtime that records what would run on which device."""

    def __init__(self, plan, caps: dict[str, Capabilities]):
        self.plan = plan
        self.caps = caps
        self.calls: list[tuple[str, RemoteCommand]] = []
        self.rows: list[tuple[str, str]] = []
        self.faults = FaultState()

    def remote_run(self, device: str, cmd: RemoteCommand) -> str:
        self.calls.append((device, cmd))
        return "192.0.2.11 dev wan0 src 192.0.2.10 uid 0\n    cache\n" if cmd.argv[:3] == ["ip", "-o", "route"] else ""

    def capabilities(self):
        return self.caps

    def fault_state(self):
        return FaultState.from_dict(asdict(self.faults))

    def save_fault_state(self, faults):
        self.faults = faults

    def journal(self, kind, name):
        if (kind, name) not in self.rows:
            self.rows.append((kind, name))


FULL = Capabilities(nft=True, tc=True, netem="yes")


def test_link_down_and_up_runs_nft_on_both_ends(topo, tmp_path):
    plan = plan_of(topo, tmp_path)
    rt = FakeRemote(plan, {d: FULL for d in plan.devices})
    ssh = shaper_for("ssh")
    link = plan.link("r1", "r2")
    ssh.set_up(rt, link, False)
    assert [(d, c.argv) for d, c in rt.calls] == [("r1", ["nft", "-f", "-"]), ("r2", ["nft", "-f", "-"])]
    assert "elements = { 192.0.2.11 }" in rt.calls[0][1].input and "elements = { 192.0.2.10 }" in rt.calls[1][1].input
    assert rt.rows == [("remote-nft", "r1"), ("remote-nft", "r2")]  # journalled before the change
    ssh.set_up(rt, link, False)  # already down: nothing runs
    assert len(rt.calls) == 2
    ssh.set_up(rt, link, True)
    assert [c.input for _, c in rt.calls[2:]] == [nft_script([]), nft_script([])]
    assert rt.faults.down == {"r1": {}, "r2": {}}


def test_shaping_asks_the_route_then_rebuilds_the_tree(topo, tmp_path):
    plan = plan_of(topo, tmp_path)
    rt = FakeRemote(plan, {d: FULL for d in plan.devices})
    ssh = shaper_for("ssh")
    link = plan.link("r1", "r2")
    slow = Direction(delay_ms=30)
    ssh.set_directions(rt, link, (slow, Direction()), (Direction(), Direction()))  # one way: r1 -> r2
    assert [(d, c.argv[:3]) for d, c in rt.calls] == [
        ("r1", ["ip", "-o", "route"]),
        ("r1", ["sh", "-c", rt.calls[1][1].argv[2]]),
    ]
    tc = rt.calls[1][1]
    assert tc.argv[2] == "tc qdisc del dev wan0 root 2>/dev/null; exec tc -batch -"
    assert "qdisc add dev wan0 parent 1:2 handle 100: netem delay 30ms\n" in tc.input
    assert rt.rows == [("remote-tc", "r1/wan0")]
    ssh.set_directions(rt, link, (Direction(), Direction()), (slow, Direction()))  # back: the kernel default
    assert rt.calls[-1] == ("r1", RemoteCommand(["sh", "-c", "tc qdisc del dev wan0 root 2>/dev/null; true"]))
    assert len(rt.calls) == 3  # the interface was remembered: no second route lookup


def test_a_missing_capability_is_refused_naming_device_and_what_is_missing(topo, tmp_path):
    plan = plan_of(topo, tmp_path)
    rt = FakeRemote(plan, {"r1": FULL, "r2": Capabilities(nft=True, tc=True, netem="no"), "r3": Capabilities()})
    ssh = shaper_for("ssh")
    with pytest.raises(InputError, match=r"link r1~r2 cannot be shaped .*: device r2 lacks the netem qdisc"):
        ssh.set_directions(rt, plan.link("r1", "r2"), (Direction(delay_ms=1),) * 2, (Direction(),) * 2)
    with pytest.raises(InputError, match=r"link r2~r3 cannot be taken down: device r3 lacks nftables"):
        ssh.set_up(rt, plan.link("r2", "r3"), False)
    assert rt.calls == [] and rt.rows == []  # refused before anything changed


def test_a_host_name_cannot_be_filtered(tmp_path):
    path = tmp_path / "names.yaml"
    path.write_text(
        "name: names\ndevices:\n  a: {kind: ssh, host: a.example}\n  b: {kind: ssh, host: 192.0.2.2}\n"
        "links:\n  - {between: [a, b]}\n"
    )
    plan = plan_of(load_topology(path), tmp_path)
    rt = FakeRemote(plan, {d: FULL for d in plan.devices})
    with pytest.raises(InputError, match="device a: host 'a.example' is a name, not an address"):
        shaper_for("ssh").set_up(rt, plan.link("a", "b"), False)


# ---- the experiment timeline's faults reach real devices through the same Testbed API ----------
class RecordingTestbed(Testbed):
    """A remote Testbed whose SSH is recorded (state, journal and fault bookkeeping are real)."""

    calls: list[tuple[str, RemoteCommand]]

    def remote_run(self, device: str, cmd: RemoteCommand) -> str:
        self.calls.append((device, cmd))
        return "192.0.2.11 dev wan0 src 192.0.2.10\n" if cmd.argv[:2] == ["ip", "-o"] else ""


def recording_testbed(topo, tmp_path, monkeypatch, caps: dict[str, Capabilities]) -> RecordingTestbed:
    from toolkit.testbed.state import TestbedState
    from toolkit.testbed.testbed import initial_link_state

    monkeypatch.setenv("CNLAB_STATE_DIR", str(tmp_path / "state"))
    plan = remote.plan_remote_testbed(topo, "rt", state_dir=str(tmp_path / "state" / "rt"), known_hosts="/dev/null")
    state = TestbedState("rt")
    state.create()
    state.write_text("plan.json", plan.to_json(routes=False))
    state.write("links.json", initial_link_state(plan))
    state.write(remote.DEVICES_FILE, {d: asdict(c) for d, c in caps.items()})
    tb = RecordingTestbed(state, plan)
    tb.calls = []
    return tb


def test_timeline_link_events_on_real_devices(topo, tmp_path, monkeypatch):
    from toolkit.experiment.model import TimelineEvent
    from toolkit.experiment.timeline import TestbedFaults, apply_event

    tb = recording_testbed(topo, tmp_path, monkeypatch, {d: FULL for d in topo.devices})
    faults = TestbedFaults(tb, None)
    down = TimelineEvent(0, "cut", "link", 1.0, {"between": ["r1", "r2"], "up": False})
    shape = TimelineEvent(1, "slow", "link", 2.0, {"between": ["r1", "r2"], "set": {"loss_pct": 5.0}, "one_way": True})
    up = TimelineEvent(2, "back", "link", 3.0, {"between": ["r1", "r2"], "up": True})
    for event in (down, shape, up):
        apply_event(faults, event)
    shown = [(d, c.argv[0] if c.argv[0] != "sh" else c.argv[2].split(";")[0]) for d, c in tb.calls]
    assert shown == [
        ("r1", "nft"),
        ("r2", "nft"),
        ("r1", "ip"),  # which interface r1 reaches r2 through
        ("r1", "tc qdisc del dev wan0 root 2>/dev/null"),
        ("r1", "nft"),
        ("r2", "nft"),
    ]
    assert "netem delay 0ms loss random 5%" in tb.calls[3][1].input
    # journalled for `down`, and the link state is what `cnlab status` shows
    assert {(r["kind"], r["name"]) for r in tb.state.resources()} == {
        ("remote-nft", "r1"),
        ("remote-nft", "r2"),
        ("remote-tc", "r1/wan0"),
    }
    stats = tb.link_stats()["r1~r2"]
    assert stats["a"]["egress"]["loss_pct"] == 5.0 and stats["a"]["down"] is False
    assert stats["configured"]["up"] is True and stats["configured"]["forward"]["loss_pct"] == 5.0
    # a partition cuts the link through the same nft path; heal brings it back
    tb.partition([["r1"], ["r2", "r3"]])
    assert tb.fault_state().down == {"r1": {"r1~r2": "192.0.2.11"}, "r2": {"r1~r2": "192.0.2.10"}}
    tb.heal()
    assert tb.fault_state().down == {"r1": {}, "r2": {}}


def test_timeline_shaping_without_netem_names_the_device(topo, tmp_path, monkeypatch):
    from toolkit.experiment.model import TimelineEvent
    from toolkit.experiment.timeline import TestbedFaults, apply_event

    caps = {"r1": FULL, "r2": Capabilities(nft=True, tc=True, netem="no"), "r3": FULL}
    tb = recording_testbed(topo, tmp_path, monkeypatch, caps)
    event = TimelineEvent(0, "slow", "link", 1.0, {"between": ["r1", "r2"], "set": {"delay_ms": 40.0}})
    with pytest.raises(InputError, match="device r2 lacks the netem qdisc"):
        apply_event(TestbedFaults(tb, None), event)
    assert tb.calls == [] and tb.state.resources() == []


def test_root_prefix_only_on_ssh_devices_and_absolute(tmp_path):
    from toolkit.topology.dump import to_yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: t\nallow_partitioned: true\ndevices:\n"
        "  e: {root: /srv/x}\n"
        "  r: {kind: ssh, host: 192.0.2.1, root: srv/x}\n"
        "  s: {kind: ssh, host: 192.0.2.2, root: /srv/x/}\n"
    )
    with pytest.raises(InputError) as e:
        load_topology(bad)
    text = str(e.value)
    assert f"{bad}:4:6: root only apply to kind: ssh" in text
    assert f"{bad}:5:41: root: root must be an absolute path without a trailing '/' or spaces (got 'srv/x')" in text
    assert f"{bad}:6:41: root: root must be an absolute path" in text
    good = tmp_path / "good.yaml"
    good.write_text("name: t\ndevices:\n  r: {kind: ssh, host: 192.0.2.1, root: /srv/cnlab}\nlinks: []\n")
    topo = load_topology(good)
    assert topo.devices["r"].ssh is not None and topo.devices["r"].ssh.root == "/srv/cnlab"
    again = tmp_path / "again.yaml"
    again.write_text(to_yaml(topo))
    assert load_topology(again).devices["r"].ssh == topo.devices["r"].ssh


def test_down_refuses_a_remote_testbed_whose_nodes_are_still_deployed(topo, tmp_path, monkeypatch):
    tb = recording_testbed(topo, tmp_path, monkeypatch, {d: FULL for d in topo.devices})
    tb.state.update_meta(kind="remote")
    (tb.state.dir / "ansible.json").write_text('{"version": "0.1.0", "hosts": ["r1"]}\n')
    with pytest.raises(InputError, match="has nodes deployed on its real devices: `cnlab down rt` removes them first"):
        Testbed.down_id("rt")
    (tb.state.dir / "ansible.json").unlink()  # removed by the cleanup role's successful run
    assert Testbed.down_id("rt") == [] and not tb.state.dir.exists()  # no fault journalled: no SSH
