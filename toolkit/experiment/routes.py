"""Where updates travel: the routed path between two node devices, its hop count and delay floor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Route:
    """The path packets take between two node devices: the testbed routes by delay, so it is a
    shortest path by mean one-way delay. floor_s is its delay floor: the sum of those delays."""

    hops: int
    floor_s: float


def routes(topology: Any, nodes: list[str] | tuple[str, ...]) -> dict[tuple[str, str], Route]:
    """Hop count and delay floor of the routed path between every two node devices (pure)."""
    import networkx as nx

    g = topology.graph(only_up=False)
    out: dict[tuple[str, str], Route] = {}
    wanted = set(nodes)
    for src in nodes:
        dist = nx.single_source_dijkstra_path_length(g, src, weight="delay_ms")
        for dst, path in nx.single_source_dijkstra_path(g, src, weight="delay_ms").items():
            if dst in wanted:
                out[(src, dst)] = Route(len(path) - 1, dist[dst] / 1000)
    return out
