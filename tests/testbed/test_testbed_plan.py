"""The testbed planner, pure: no root, nothing touched on the machine."""

from __future__ import annotations

import ipaddress
import json

import networkx as nx
import pytest

from toolkit.errors import InputError
from toolkit.testbed import naming
from toolkit.testbed.plan import allocate_mgmt_subnet, plan_from_json, plan_testbed, route_changes, static_routes
from toolkit.testbed.shapers.netem_lines import direction_lines, netem_args
from toolkit.testbed.testbed import Testbed
from toolkit.topology.model import Device, Direction, Link, SshTarget, Topology

from .conftest import HOST, SMALL, line, two_sites

V1 = {"cpu": "v1:/sys/fs/cgroup/cpu", "memory": "v1:/sys/fs/cgroup/memory"}


def plan(topo, tid="tb1", shaper="wire", **kw):
    return plan_testbed(topo, tid, shaper=shaper, state_dir=f"/run/cnlab/testbeds/{tid}", **kw)


def grid(n: int) -> Topology:
    g = nx.grid_2d_graph(n, n)
    name = {node: f"g{node[0]}x{node[1]}" for node in g}
    d = Direction(delay_ms=1)
    return Topology(
        "grid", {v: Device(v, HOST) for v in name.values()}, tuple(Link(name[a], name[b], d, d) for a, b in g.edges)
    )


def test_ids_and_names_fit_the_interface_limit():
    assert naming.check_id("a") == "a" and naming.check_id("ab1c9") == "ab1c9"
    for bad in ("", "1ab", "abcdef", "Ab", "a-b", "a_b"):
        with pytest.raises(InputError):
            naming.check_id(bad)
    rid = naming.random_id()
    assert naming.ID_RE.match(rid)
    p = plan(grid(10), tid="zzzzz")  # 5-char id, 100 devices, 180 links
    names = [p.bridge] + [d.mgmt_peer for d in p.devices.values()]
    names += [e.ifname for lk in p.links for e in (lk.a, lk.b)] + [e.wire_if for lk in p.links for e in (lk.a, lk.b)]
    assert max(len(n) for n in names) <= naming.IFNAMSIZ
    assert len(set(names)) == len(names)
    # everything outside our own namespaces carries the prefix and the id
    assert all(naming.owned_by("rootif", n, "zzzzz") for n in [p.bridge] + [d.mgmt_peer for d in p.devices.values()])
    assert all(naming.owned_by("netns", n, "zzzzz") for n in p.namespaces())
    assert not naming.owned_by("netns", "cnzzzzzd1", "zzzz")  # testbed zzzzz is not zzzz
    assert not naming.owned_by("rootif", "eth0", "zzzzz")
    assert naming.owned_by("cgroup", "/sys/fs/cgroup/cpu/cnlab-ab/cnabd3", "ab")
    assert not naming.owned_by("cgroup", "/sys/fs/cgroup/cpu/other", "ab")


def test_two_testbeds_never_share_a_name():
    a, b = plan(line(3), tid="ab"), plan(line(3), tid="abd")
    root_a = {a.bridge, *(d.mgmt_peer for d in a.devices.values()), *a.namespaces()}
    root_b = {b.bridge, *(d.mgmt_peer for d in b.devices.values()), *b.namespaces()}
    assert not root_a & root_b


def test_addresses_are_unique_and_in_the_benchmark_ranges():
    p = plan(grid(6), ipv6=True)
    v4 = [d.service_v4 for d in p.devices.values()] + [e.addr for lk in p.links for e in (lk.a, lk.b)]
    v4 += [d.mgmt_addr for d in p.devices.values()] + [p.bridge_addr]
    ips = [ipaddress.ip_interface(a).ip for a in v4]
    assert len(set(ips)) == len(ips)
    assert all(ip in ipaddress.ip_network("198.18.0.0/15") for ip in ips)
    v6 = [d.service_v6 for d in p.devices.values()] + [e.addr6 for lk in p.links for e in (lk.a, lk.b)]
    assert all(ipaddress.ip_interface(a).ip in ipaddress.ip_network("fd00::/8") for a in v6)
    assert len(set(v6)) == len(v6)
    # the two ends of a link share a /31
    for lk in p.links:
        assert ipaddress.ip_interface(lk.a.addr).network == ipaddress.ip_interface(lk.b.addr).network


def test_management_subnet_avoids_taken_ones():
    first = allocate_mgmt_subnet(3, [])
    assert str(first) == "198.18.0.0/24"
    assert str(allocate_mgmt_subnet(3, ["198.18.0.0/24", "198.18.1.7/32"])) == "198.18.2.0/24"
    assert allocate_mgmt_subnet(500, []).prefixlen == 23
    p = plan(line(3), mgmt_taken=["198.18.0.0/24"])
    assert p.mgmt_subnet == "198.18.1.0/24" and p.bridge_addr == "198.18.1.1/24"


def test_static_routes_follow_the_lowest_delay():
    p = plan(two_sites(), tid="ts")
    d = p.devices
    # w1 -> w2: the direct link is 20 ms; via e1-e2 it is 1 + 1 + 20 = 22 ms
    by_dst = {r.dst: r for r in d["w1"].routes}
    w2, w3 = d["w2"].service_v4, d["w3"].service_v4
    w1_e1 = p.link("w1", "e1")
    # w1 -> w3: via e1-e2-e3-w3 costs 4 ms, via w2 costs 40 ms
    assert by_dst[w3].dev == w1_e1.end("w1").ifname
    assert by_dst[w3].via == w1_e1.end("e1").addr.split("/")[0]
    assert by_dst[w3].src == d["w1"].service_v4.split("/")[0]
    assert by_dst[w2].dev == p.link("w1", "w2").end("w1").ifname
    # every device has a route to every other one, v4 and v6
    for dev in d.values():
        assert len(dev.routes) == len(d) - 1 and len(dev.routes6) == len(d) - 1


def test_every_static_route_leads_to_its_destination():
    p = plan(grid(5))
    addr_owner = {e.addr.split("/")[0]: (lk, e) for lk in p.links for e in (lk.a, lk.b)}
    svc = {d.service_v4: name for name, d in p.devices.items()}
    routes = {name: {r.dst: r for r in d.routes} for name, d in p.devices.items()}
    for src in p.devices:
        for dst_addr, dst in svc.items():
            hops, cur = 0, src
            while cur != dst:
                r = routes[cur][dst_addr]
                cur = addr_owner[r.via][1].device
                hops += 1
                assert hops < len(p.devices)
            # a 5x5 grid with equal delays: routes are shortest in hops too (Manhattan distance)
            (x1, y1), (x2, y2) = (tuple(map(int, n[1:].split("x"))) for n in (src, dst))
            assert hops == abs(x1 - x2) + abs(y1 - y2), (src, dst, hops)


def test_partition_reroutes_inside_a_group():
    p = plan(two_sites(), tid="ts")
    tb = Testbed(None, p)  # type: ignore[arg-type]
    groups = tb.resolve_groups(["west", "east"])
    assert sorted(groups[0]) == ["w1", "w2", "w3"] and len(groups) == 2
    cut = {lk.id for lk in p.links if (lk.a.device[0] != lk.b.device[0])}
    routes = static_routes(p.devices, p.links, True, frozenset(cut))
    w1 = {r.dst: r for r in routes["w1"][0]}
    assert p.devices["e1"].service_v4 not in w1  # no route across the partition
    assert w1[p.devices["w3"].service_v4].dev == p.link("w1", "w2").end("w1").ifname  # inside: via w2
    lines = route_changes(p.devices["w1"].routes, routes["w1"][0])
    assert f"route del {p.devices['e1'].service_v4}" in lines
    assert any(line.startswith(f"route replace {p.devices['w3'].service_v4}") for line in lines)
    assert route_changes(p.devices["w1"].routes, p.devices["w1"].routes) == []
    # groups by device list, the rest forms a group, mistakes are input errors
    assert tb.resolve_groups(["w1+w2", "e1"])[-1] == ["w3", "e2", "e3"]
    with pytest.raises(InputError):
        tb.resolve_groups(["west", "nowhere"])
    with pytest.raises(InputError):
        tb.resolve_groups(["w1+w2", "w2"])


def test_netem_commands_per_direction():
    d = Direction(delay_ms=10, jitter_ms=2, loss_pct=1.5, rate_kbit=5000)
    lines = direction_lines("ab0l1a", d)
    assert lines[0] == "qdisc replace dev ab0l1a root handle 1: netem delay 10ms 2ms loss random 1.5%"
    assert lines[1].startswith("qdisc replace dev ab0l1a parent 1:1 handle 10: tbf rate 5000kbit burst")
    assert direction_lines("x", Direction(delay_ms=5)) == ["qdisc replace dev x root handle 1: netem delay 5ms"]
    assert direction_lines("x", Direction(delay_ms=5), had_rate=True)[-1] == "qdisc del dev x parent 1:1 handle 10:"
    ge = netem_args(Direction(loss_pct=10, loss_burst=4))
    assert ge[2:4] == ["loss", "gemodel"] and ge[5] == "25%"  # r = 1/burst
    p = plan(line(3), shaper="netem")
    tc = [s for ph in p.phases() if ph.title == "netem shaping" for s in ph.steps]
    assert len(tc) == 3  # one batch per device with a link end
    mid = next(s for s in tc if s.netns == p.devices["d1"].netns)
    # d1 shapes d1->d0 (reverse of link 0) and d1->d2 (forward of link 1)
    assert sum(line.startswith("qdisc replace") and "root" in line for line in mid.lines) == 2
    assert not any(ph.title == "wire processes" for ph in p.phases())


def test_wire_plan_has_spec_and_two_veths_per_link():
    p = plan(line(3), shaper="wire", wire_shards=2)
    assert p.wire_netns == "cntb1w0"
    specs = [lk.to_dict() for s in p.wire_shards for lk in s.spec.links]
    assert sorted(s["id"] for s in specs) == ["d0~d1", "d1~d2"]
    s0 = specs[0]
    assert set(s0) == {"id", "a_if", "b_if", "forward", "reverse", "up"}
    assert s0["forward"]["delay_ms"] == 10
    veths = next(ph for ph in p.phases() if ph.title == "link veths").steps[0].lines
    assert len(veths) == 4 and all("netns cntb1w0" in v for v in veths)
    offl = next(ph for ph in p.phases() if ph.title == "link ends up with offloads off")
    off = [line for s in offl.steps for line in s.lines if line.startswith("offloads-off")]
    assert sorted(off) == sorted(
        f"offloads-off {e}" for lk in p.links for e in (lk.a.ifname, lk.b.ifname, lk.a.wire_if, lk.b.wire_if)
    )
    titles = [ph.title for ph in p.phases()]
    assert titles.index("link ends up with offloads off") < titles.index("addresses and routes")
    assert json.loads(json.dumps(s0)) == s0  # the spec is plain JSON, as the wire reads it


def test_cgroups_from_profiles():
    topo = line(2, profile=SMALL)
    p = plan(topo, cgroup_controllers=V1)
    cg = p.devices["d0"].cgroup
    assert cg.dirs[0] == "/sys/fs/cgroup/cpu/cnlab-tb1"
    assert cg.settings["/sys/fs/cgroup/cpu/cnlab-tb1/cntb1d0/cpu.cfs_quota_us"] == "50000"
    assert cg.settings["/sys/fs/cgroup/memory/cnlab-tb1/cntb1d0/memory.limit_in_bytes"] == str(128 << 20)
    assert cg.tasks_files == [
        "/sys/fs/cgroup/cpu/cnlab-tb1/cntb1d0/tasks",
        "/sys/fs/cgroup/memory/cnlab-tb1/cntb1d0/tasks",
    ]
    v2 = plan(topo, cgroup_controllers={"cpu": "v2:/sys/fs/cgroup", "memory": "v2:/sys/fs/cgroup"})
    s = v2.devices["d1"].cgroup.settings
    assert s["/sys/fs/cgroup/cnlab-tb1/cntb1d1/cpu.max"] == "50000 100000"
    assert s["/sys/fs/cgroup/cnlab-tb1/cntb1d1/memory.max"] == str(128 << 20)
    assert plan(line(2), cgroup_controllers=V1).devices["d0"].cgroup is None  # host: no limits


def test_hosts_file_names_every_device():
    p = plan(line(3))
    hosts = p.hosts_file()
    assert "198.19.0.3\td2" in hosts and "fd00:c0::3\td2.v6" in hosts
    assert f"{p.devices['d2'].mgmt_addr.split('/')[0]}\td2.mgmt" in hosts
    files = next(ph for ph in p.phases() if ph.title.startswith("hosts")).steps
    assert all(list(s.files)[0] == f"/etc/netns/{s.resources[0].name.split('/')[-1]}/hosts" for s in files)


def test_every_created_resource_is_journalled_first():
    p = plan(line(3, profile=SMALL), cgroup_controllers=V1)
    res = [r for ph in p.phases() for s in ph.steps for r in s.resources]
    kinds = {(r.kind, r.name) for r in res}
    assert {("netns", ns) for ns in p.namespaces()} <= kinds
    assert ("rootif", p.bridge) in kinds
    assert all(("rootif", d.mgmt_peer) in kinds for d in p.devices.values())
    assert all(("hostsdir", f"/etc/netns/{d.netns}") in kinds for d in p.devices.values())
    assert all(naming.owned_by(r.kind, r.name, "tb1") for r in res)


def test_plan_round_trips_through_json():
    p = plan(two_sites(), cgroup_controllers=V1)
    assert plan_from_json(p.to_json()) == p
    assert "testbed tb1" in p.summary()


def test_input_errors():
    devices = {"a": Device("a", HOST), "b": Device("b", HOST, kind="ssh", ssh=SshTarget("10.0.0.1"))}
    topo = Topology("mixed", devices, ())
    with pytest.raises(InputError, match="ssh devices"):
        plan(topo)
    with pytest.raises(InputError):
        plan(line(2), tid="Bad-Id")


def test_babeld_plan():
    p = plan_testbed(line(3), "tb1", shaper="wire", routing="babeld", state_dir="/s")
    assert all(not d.routes for d in p.devices.values())
    titles = [ph.title for ph in p.phases()]
    assert titles[-2:] == ["babeld", "routes converge"]
    assert p.expected_routes() == {"cntb1d0": 2, "cntb1d1": 2, "cntb1d2": 2}
    conf = p.babeld_conf(p.devices["d0"])
    assert "redistribute local ip 198.19.0.0/17 ge 32 allow" in conf


def test_a_cut_can_leave_more_islands_than_groups():
    # d0 - d1 - d2 - d3 - d4: groups {d2} and the rest; the rest falls apart into d0+d1 and d3+d4
    p = plan(line(5))
    assert p.islands() == [["d0", "d1", "d2", "d3", "d4"]]
    cut = frozenset(lk.id for lk in p.links if "d2" in (lk.a.device, lk.b.device))
    assert len(cut) == 2
    assert p.islands(cut) == [["d0", "d1"], ["d3", "d4"], ["d2"]]


def test_dry_run_prints_the_plan(cli):
    from pathlib import Path

    topo = Path(__file__).resolve().parents[2] / "experiments" / "topologies" / "line-3.yaml"
    r = cli("up", topo, "--dry-run", "--id", "dry1", "--shaper", "wire")
    assert r.returncode == 0, r.stderr
    assert "testbed dry1" in r.stdout and "netns add cndry1d0" in r.stdout
    r = cli("up", topo, "--dry-run", "--id", "dry1", "--shaper", "wire", "--json")
    assert json.loads(r.stdout)["id"] == "dry1"
    r = cli("up", topo, "--dry-run", "--id", "BAD")
    assert r.returncode == 2 and "testbed id" in r.stderr


def test_clear_errors_for_privileges_and_netem(monkeypatch):
    from toolkit import capabilities
    from toolkit.errors import RunError
    from toolkit.testbed import testbed as tbmod

    monkeypatch.setattr(capabilities, "is_root", lambda: False)
    monkeypatch.setattr(capabilities, "user_namespaces_enabled", lambda: False)
    with pytest.raises(RunError, match="need root.*user namespaces are off"):
        tbmod.check_privileges()
    monkeypatch.setattr(capabilities, "user_namespaces_enabled", lambda: True)
    with pytest.raises(RunError, match="need root"):
        tbmod.check_privileges()
    monkeypatch.setattr(capabilities, "has_netem", lambda: False)
    with pytest.raises(RunError, match="no sch_netem"):
        tbmod.choose_shaper("netem")
    assert tbmod.choose_shaper(None) == "wire"
    monkeypatch.setattr(capabilities, "has_netem", lambda: True)
    assert tbmod.choose_shaper(None) == "netem"
    with pytest.raises(InputError):
        tbmod.choose_shaper("tc")


def test_wire_shards_scale_with_links():
    from toolkit.testbed.testbed import default_wire_shards

    assert default_wire_shards(0) == 1 and default_wire_shards(2) == 1
    assert default_wire_shards(395) == 4 and default_wire_shards(955) == 10
    p = plan(grid(6), wire_shards=3)  # 60 links
    ids = [lk.id for s in p.wire_shards for lk in s.spec.links]
    assert len(p.wire_shards) == 3 and sorted(ids) == sorted(lk.id for lk in p.links)
    assert len({s.control_path for s in p.wire_shards}) == 3


def test_device_sshd_sessions_get_a_home_of_their_own():
    # bash started by sshd reads ~/.bashrc: with the emulating machine's HOME every Ansible task
    # would run that machine's shell set-up
    base = line(2)
    topo = Topology(base.name, {n: Device(n, HOST, deploy="ansible") for n in base.devices}, base.links)
    p = plan(topo)
    configs = [
        (path, text) for ph in p.phases() for st in ph.steps if st.kind == "sshd" for path, text in st.files.items()
    ]
    assert len(configs) == 2
    for path, text in configs:
        device_dir = path.rsplit("/", 1)[0]
        assert f'SetEnv HOME="{device_dir}"' in text.splitlines()
        assert device_dir.startswith("/run/cnlab/testbeds/tb1/")
