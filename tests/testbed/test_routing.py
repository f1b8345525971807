"""Static routes from toolkit/testbed/routing.py against the networkx computation they replace:
the same next hops (ties included) on small, irregular, disconnected and partitioned topologies."""

from __future__ import annotations

import random

import networkx as nx
import pytest

from toolkit.testbed import routing
from toolkit.testbed.plan import DevicePlan, LinkPlan, Route, plan_testbed, route_changes, route_updates, static_routes
from toolkit.topology.model import Device, Direction, Link, Topology

from .conftest import HOST, line, two_sites


# ---- the reference: the networkx version this code replaced, verbatim but for its name -----------
def reference_next_hops(g: nx.Graph) -> dict[str, dict[str, str]]:
    hops: dict[str, dict[str, str]] = {u: {} for u in g}
    for v in g:
        pred, _ = nx.dijkstra_predecessor_and_distance(g, v, weight="delay_ms")
        for u, ps in pred.items():
            if u != v and ps:
                hops[u][v] = min(ps)
    return hops


def reference_static_routes(
    devices: dict[str, DevicePlan], links: list[LinkPlan], ipv6: bool, exclude: frozenset[str] = frozenset()
) -> dict[str, tuple[list[Route], list[Route]]]:
    g: nx.Graph = nx.Graph()
    g.add_nodes_from(devices)
    by_pair: dict[frozenset[str], LinkPlan] = {}
    for link in links:
        if not link.routed or link.id in exclude:
            continue
        w = (link.forward.delay_ms + link.reverse.delay_ms) / 2 + 1e-3
        key = frozenset((link.a.device, link.b.device))
        if key in by_pair and g.edges[link.a.device, link.b.device]["delay_ms"] <= w:
            continue
        by_pair[key] = link
        g.add_edge(link.a.device, link.b.device, delay_ms=w)
    hops = reference_next_hops(g)
    out = {}
    for u, dp in devices.items():
        r4, r6 = [], []
        for v, nh in sorted(hops[u].items(), key=lambda kv: devices[kv[0]].index):
            link = by_pair[frozenset((u, nh))]
            mine, theirs = link.end(u), link.other(u)
            dst = devices[v]
            r4.append(Route(dst.service_v4, theirs.addr.split("/")[0], mine.ifname, dp.service_v4.split("/")[0]))
            if ipv6:
                r6.append(Route(dst.service_v6, theirs.addr6.split("/")[0], mine.ifname, dp.service_v6.split("/")[0]))
        out[u] = (r4, r6)
    return out


# ---- topologies ------------------------------------------------------------------------------------
def grid(rows: int, cols: int, delay_ms: float = 2) -> Topology:
    g = nx.grid_2d_graph(rows, cols)
    name = {v: f"g{v[0]}x{v[1]}" for v in sorted(g)}
    d = Direction(delay_ms=delay_ms)
    devices = {name[v]: Device(name[v], HOST, site="west" if v[1] < cols // 2 else "east") for v in sorted(g)}
    return Topology(f"grid-{rows}x{cols}", devices, tuple(Link(name[a], name[b], d, d) for a, b in sorted(g.edges)))


DELAYS = (0.1, 0.2, 0.3, 0.5, 1, 1, 2, 2, 2, 7.25)  # 0.1 + 0.2 != 0.3 in floats; many equal ones


def irregular(seed: int, n: int = 30) -> Topology:
    """Random sparse graph: names whose order is not the device order, asymmetric and equal
    delays, parallel links, links that start down, and (sometimes) more than one component."""
    rnd = random.Random(seed)
    names = [rnd.choice("abcxyz") + str(rnd.randrange(1000)) for _ in range(n)]
    names = list(dict.fromkeys(names))
    rnd.shuffle(names)
    devices = {x: Device(x, HOST, site=rnd.choice(["west", "east"])) for x in names}
    links = []
    parts = 1 if seed % 3 else 2
    for i in range(1, len(names)):
        if parts == 2 and i == len(names) // 2:
            continue  # the second half is its own component
        j = rnd.randrange(i) if not (parts == 2 and i > len(names) // 2) else rnd.randrange(len(names) // 2, i)
        links.append((names[j], names[i]))
    for _ in range(len(names)):
        a, b = rnd.sample(names, 2)
        links.append((a, b))  # extra edges, some parallel to existing ones
    out = []
    for a, b in links:
        fwd = Direction(delay_ms=rnd.choice(DELAYS))
        rev = fwd if rnd.random() < 0.7 else Direction(delay_ms=rnd.choice(DELAYS))
        out.append(Link(a, b, fwd, rev, up=rnd.random() > 0.1))
    return Topology(f"irregular-{seed}", devices, tuple(out))


def plan_of(topo: Topology):
    return plan_testbed(topo, "tr1", shaper="none", routing="device", state_dir="/tmp/cnlab-test-none")


def cuts(p, seed: int) -> list[frozenset[str]]:
    """No cut, the west|east partition, and a random set of links."""
    west = {n for n, d in p.devices.items() if d.site == "west"}
    halves = frozenset(lk.id for lk in p.links if (lk.a.device in west) != (lk.b.device in west))
    rnd = random.Random(seed)
    some = frozenset(lk.id for lk in p.links if rnd.random() < 0.3)
    return [frozenset(), halves, some]


TOPOLOGIES = [line(1), line(2), line(5), two_sites(), grid(5, 5), grid(4, 7, delay_ms=0.1)] + [
    irregular(s) for s in range(12)
]


@pytest.mark.parametrize("topo", TOPOLOGIES, ids=lambda t: t.name)
def test_static_routes_match_networkx(topo):
    p = plan_of(topo)
    for i, cut in enumerate(cuts(p, 7)):
        routing.next_hop_links.cache_clear()
        for ipv6 in (True, False):
            assert static_routes(p.devices, p.links, ipv6, cut) == reference_static_routes(
                p.devices, p.links, ipv6, cut
            ), (topo.name, i, ipv6)


@pytest.mark.parametrize("topo", TOPOLOGIES, ids=lambda t: t.name)
def test_route_updates_are_the_route_changes(topo):
    p = plan_of(topo)
    for old in cuts(p, 1):
        for new in cuts(p, 2):
            a = reference_static_routes(p.devices, p.links, True, old)
            b = reference_static_routes(p.devices, p.links, True, new)
            want = {n: sorted(route_changes(a[n][0], b[n][0]) + route_changes(a[n][1], b[n][1])) for n in p.devices}
            got = {u.device: sorted(u.lines()) for u in route_updates(p.devices, p.links, True, old, new)}
            assert got == {n: lines for n, lines in want.items() if lines}
            assert all(u.netns == p.devices[u.device].netns for u in route_updates(p.devices, p.links, True, old, new))


def test_a_partition_removes_every_route_between_groups():
    p = plan_of(grid(6, 6))
    west = {n for n, d in p.devices.items() if d.site == "west"}
    cut = frozenset(lk.id for lk in p.links if (lk.a.device in west) != (lk.b.device in west))
    ups = {u.device: u for u in route_updates(p.devices, p.links, True, frozenset(), cut)}
    for name in p.devices:
        others = [o for o in p.devices.values() if (o.name in west) != (name in west)]
        assert sorted(ups[name].delete) == sorted([o.service_v4 for o in others] + [o.service_v6 for o in others])
        assert ups[name].replace == []  # a grid's halves route inside themselves already
    back = route_updates(p.devices, p.links, True, cut, frozenset())
    assert all(not u.delete for u in back) and sum(len(u.replace) for u in back) == 2 * 2 * 18 * 18


def test_tables_are_memoised_and_read_only():
    p = plan_of(grid(3, 3))
    g = routing.route_graph(p.devices, p.links)
    t = routing.next_hop_links(g)
    assert routing.next_hop_links(routing.route_graph(p.devices, p.links)) is t
    with pytest.raises(ValueError):
        t[0, 1] = 5
