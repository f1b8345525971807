"""Figures about a topology for `cnlab show`: counts, graph diameter, path delays."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from typing import Any

import networkx as nx

from .model import Topology

EXACT_UP_TO = 400  # devices; above this, path statistics use a seeded sample of sources
SAMPLE_SOURCES = 200


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def summarize(topo: Topology) -> dict[str, Any]:
    devices = list(topo.devices.values())
    g = topo.graph(only_up=False)
    components = list(nx.connected_components(g))
    largest = g.subgraph(max(components, key=len)) if components else g
    sources = list(largest.nodes)
    sampled = len(sources) > EXACT_UP_TO
    if sampled:
        sources = random.Random(0).sample(sources, SAMPLE_SOURCES)
    hops: list[int] = []
    delays: list[float] = []
    for src in sources:
        hops.extend(nx.single_source_shortest_path_length(largest, src).values())
        delays.extend(nx.single_source_dijkstra_path_length(largest, src, weight="delay_ms").values())
    hops = [h for h in hops if h > 0]
    delays = sorted(d for d in delays if d > 0)
    return {
        "name": topo.name,
        "devices": {
            "total": len(devices),
            "by_kind": dict(Counter(d.kind for d in devices)),
            "by_site": dict(Counter(d.site or "(none)" for d in devices)),
            "by_profile": dict(Counter(d.profile.name for d in devices)),
        },
        "links": {
            "total": len(topo.links),
            "down": sum(not link.up for link in topo.links),
            "by_preset": dict(Counter(link.preset or "(explicit)" for link in topo.links)),
        },
        "sites": list(topo.sites),
        "graph": {
            "components": len(components),
            "diameter_hops": max(hops, default=0),
            "path_delay_ms": {
                "min": round(delays[0], 3) if delays else 0.0,
                "median": round(statistics.median(delays), 3) if delays else 0.0,
                "p95": round(_percentile(delays, 0.95), 3),
                "max": round(delays[-1], 3) if delays else 0.0,
            },
            "sampled_sources": len(sources) if sampled else None,
        },
        "federation": None
        if topo.federation is None
        else {"image": topo.federation.image, "nodes": len(topo.federation.devices)},
        "provenance": topo.provenance or None,
    }
