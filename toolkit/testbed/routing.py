"""Static routing: which link every device uses towards every other device, for a whole testbed
at once. Pure (arguments in, arrays out), so it is unit-tested without root.

The rule (unchanged from the first, networkx-based version, and tested against it): a device u
reaches a device v through its neighbour on a shortest path by link delay (the mean of both
directions plus 1 us, so fewer hops win on ties), the alphabetically first such neighbour on
ties. "Shortest" is decided with the same floating-point sums Dijkstra makes from v outwards,
so equal-cost paths are the ones networkx's `dijkstra_predecessor_and_distance` calls equal.

Why not networkx: one Dijkstra per device over networkx graphs took 13 s for a 1,000-device grid
(benchmarks/results/partition_scale.md), twice per partition and heal. Here a plain heap Dijkstra
over integer adjacency lists fills a distance matrix, and the next hops of all pairs come from it
in a few vectorised numpy operations. Tables are memoised (a few of them): a partition then
needs one new table and the heal none (the uncut table is still there from `up`).

A table `T` has `T[v, u]` = the index of the link device u routes over towards device v (indices
are positions in `RouteGraph.names`, the plan's device order), -1 when u has no route to v
(u == v, or no path).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .plan import DevicePlan, LinkPlan

Table = npt.NDArray[np.int32]
ROWS_PER_CHUNK = 256  # next-hop extraction works on this many destinations at a time (memory bound)


@dataclass(frozen=True)
class RouteGraph:
    """The routed links of a testbed minus the excluded ones: one link per device pair (the
    lowest delay; the first in plan order on ties)."""

    names: tuple[str, ...]  # devices in plan order
    edges: tuple[tuple[int, int, float, int], ...]  # (a, b, weight, link index), a < b by position


def route_graph(
    devices: dict[str, DevicePlan], links: list[LinkPlan], exclude: frozenset[str] = frozenset()
) -> RouteGraph:
    names = tuple(sorted(devices, key=lambda n: devices[n].index))
    pos = {n: i for i, n in enumerate(names)}
    best: dict[tuple[int, int], tuple[float, int]] = {}
    for link in links:
        if not link.routed or link.id in exclude:
            continue
        w = (link.forward.delay_ms + link.reverse.delay_ms) / 2 + 1e-3  # fewer hops on ties
        a, b = pos[link.a.device], pos[link.b.device]
        key = (min(a, b), max(a, b))
        if key in best and best[key][0] <= w:
            continue
        best[key] = (w, link.index)
    return RouteGraph(names, tuple((a, b, w, k) for (a, b), (w, k) in best.items()))


def distances(graph: RouteGraph) -> npt.NDArray[np.float64]:
    """D[v, u]: the length of a shortest path from v to u (inf: none), summed from v outwards."""
    n = len(graph.names)
    adj: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for a, b, w, _k in graph.edges:
        adj[a].append((b, w))
        adj[b].append((a, w))
    inf = float("inf")
    out = np.full((n, n), inf)
    pop, push = heapq.heappop, heapq.heappush
    for s in range(n):
        dist = [inf] * n
        dist[s] = 0.0
        heap = [(0.0, s)]
        while heap:
            d, u = pop(heap)
            if d > dist[u]:
                continue  # a stale entry: u was reached more cheaply since
            for p, w in adj[u]:
                nd = d + w
                if nd < dist[p]:
                    dist[p] = nd
                    push(heap, (nd, p))
        out[s] = dist
    return out


@lru_cache(maxsize=4)
def next_hop_links(graph: RouteGraph) -> Table:
    """The table T (see the module doc) of `graph`; read-only, memoised."""
    n = len(graph.names)
    table = np.full((n, n), -1, dtype=np.int32)
    if graph.edges:
        dist = distances(graph)
        # arcs u -> p, grouped by u, neighbours by name within a group (ties go to the first)
        arcs = [(a, b, w, k) for a, b, w, k in graph.edges] + [(b, a, w, k) for a, b, w, k in graph.edges]
        arcs.sort(key=lambda arc: (arc[0], graph.names[arc[1]]))
        au = np.array([arc[0] for arc in arcs], dtype=np.int64)
        ap = np.array([arc[1] for arc in arcs], dtype=np.int64)
        aw = np.array([arc[2] for arc in arcs], dtype=np.float64)
        ak = np.array([arc[3] for arc in arcs], dtype=np.int32)
        m = len(arcs)
        owners = np.unique(au)  # devices with at least one arc, ascending
        starts = np.searchsorted(au, owners)
        rank = m - np.arange(m)  # the first arc of a group scores highest
        for lo in range(0, n, ROWS_PER_CHUNK):
            d = dist[lo : lo + ROWS_PER_CHUNK]
            du = d[:, au]
            # p is on a shortest path from v to u: D[v,p] + w == D[v,u] (u reachable)
            on_path = (d[:, ap] + aw == du) & np.isfinite(du)
            best = np.maximum.reduceat(np.where(on_path, rank, 0), starts, axis=1)
            first = m - best  # index of the first arc on a path, per (v, owner)
            hop = np.where(best > 0, ak[np.minimum(first, m - 1)], -1)
            table[lo : lo + ROWS_PER_CHUNK, owners] = hop
        np.fill_diagonal(table, -1)
    table.flags.writeable = False
    return table
