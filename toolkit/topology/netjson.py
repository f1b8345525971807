"""Import a NetJSON NetworkGraph (https://netjson.org) as a topology.

The rule that turns a link's ETX cost into link behaviour (documented in docs/topology.md):
ETX = 1 / (df * dr) is the expected number of transmissions per delivered frame. Taking both
directions as equally good, each direction delivers a single attempt with probability
p = 1 / sqrt(ETX). With `mac_attempts` 802.11 attempts per frame, a packet is lost only when all
fail, so loss_pct = 100 * (1 - p) ** mac_attempts. Each attempt costs the preset's air time,
so delay_ms and jitter_ms are the preset's times ETX and rate_kbit is the preset's divided by ETX.
Graphs with another metric keep the preset's figures. Self-loops (source == target) are skipped
and counted in the provenance, since a link joins two devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, Problem
from ..yamlsource import Document, load_file
from .model import Device, Direction, Link, Profile, Topology
from .names import did_you_mean, is_valid_name, sanitize
from .presets import DEFAULT_PROFILE, LINK_PRESETS, PROFILES

if TYPE_CHECKING:
    from .loader import _Builder
    from .schema import ImportSpec


@dataclass
class Imported:
    devices: dict[str, Device]
    links: list[Link]
    sites: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)


def etx_direction(base: Direction, cost: float, mac_attempts: int) -> Direction:
    """One direction of a link whose ETX is `cost`, from the per-attempt figures in `base`."""
    delivery = 1 / math.sqrt(cost)
    rate = None if base.rate_kbit is None else max(1, round(base.rate_kbit / cost))
    return Direction(
        delay_ms=round(base.delay_ms * cost, 3),
        jitter_ms=round(base.jitter_ms * cost, 3),
        loss_pct=round(100 * (1 - delivery) ** mac_attempts, 3),
        loss_burst=base.loss_burst,
        rate_kbit=rate,
        reorder=base.reorder,
    )


def read_netjson(
    path: str | Path,
    *,
    link: Direction,
    link_name: str,
    mac_attempts: int = 4,
    profile: Profile = PROFILES[DEFAULT_PROFILE],
    site: str | None = None,
) -> Imported:
    """Read a NetworkGraph; raises InputError with positions inside the NetJSON file."""
    doc = load_file(path)
    problems: list[Problem] = list(doc.problems)
    data = doc.data

    def bad(where: tuple[Any, ...], message: str) -> None:
        problems.append(doc.problem(where, message))

    if not isinstance(data, dict) or data.get("type") != "NetworkGraph":
        bad(("type",), 'not a NetJSON NetworkGraph: expected "type": "NetworkGraph"')
        raise InputError(problems)
    nodes, raw_links = data.get("nodes"), data.get("links")
    for key, value in (("nodes", nodes), ("links", raw_links)):
        if not isinstance(value, list):
            bad((key,), f"'{key}' must be a list")
    if problems:
        raise InputError(problems)

    assert isinstance(nodes, list) and isinstance(raw_links, list)  # checked above
    names: dict[str, str] = {}  # NetJSON id -> device name
    taken: set[str] = set()
    devices: dict[str, Device] = {}
    for i, node in enumerate(nodes):
        node_id = node.get("id") if isinstance(node, dict) else None
        if not isinstance(node_id, str) or not node_id:
            bad(("nodes", i), "a node needs a non-empty string 'id'")
            continue
        if node_id in names:
            bad(("nodes", i, "id"), f"duplicate node id '{node_id}'")
            continue
        name = base = sanitize(node_id)
        n = 2
        while name in taken:
            name, n = f"{base[:60]}-{n}", n + 1
        names[node_id] = name
        taken.add(name)
        devices[name] = Device(name=name, profile=profile, site=site, meta={"netjson_id": node_id})

    etx = str(data.get("metric", "")).lower() == "etx"
    costs: dict[tuple[str, str], float] = {}
    first_at: dict[tuple[str, str], int] = {}
    self_loops = 0
    for i, raw in enumerate(raw_links):
        where = ("links", i)
        if not isinstance(raw, dict):
            bad(where, "a link must be a mapping with source, target and cost")
            continue
        ends = []
        for end in ("source", "target"):
            value = raw.get(end)
            if value not in names:
                bad(
                    where + (end,),
                    f"'{end}' must name a node id; '{value}' is not one{did_you_mean(str(value), names)}",
                )
            ends.append(value)
        cost = raw.get("cost")
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost):
            bad(where + ("cost",), f"'cost' must be a finite number (got {cost!r})")
            continue
        if etx and cost < 1:
            bad(where + ("cost",), f"an ETX cost is at least 1 (got {cost})")
            continue
        if len(ends) != 2 or ends[0] not in names or ends[1] not in names:
            continue
        src, dst = names[ends[0]], names[ends[1]]
        if src == dst:
            self_loops += 1
            continue
        if (src, dst) in costs:
            bad(where, f"duplicate link {ends[0]} -> {ends[1]} (first at line {first_at[(src, dst)]})")
            continue
        costs[(src, dst)] = float(cost)
        first_at[(src, dst)] = doc.position(where)[0]
    if problems:
        raise InputError(problems)

    def shaped(cost: float) -> Direction:
        return etx_direction(link, cost, mac_attempts) if etx else link

    links: list[Link] = []
    for (src, dst), cost in costs.items():
        if (dst, src) in costs and (dst, src) < (src, dst):
            continue  # already joined as the reverse of an earlier link
        back = costs.get((dst, src), cost)
        links.append(Link(a=src, b=dst, forward=shaped(cost), reverse=shaped(back), preset=None))

    provenance = {
        "format": "netjson",
        "file": str(path),
        "label": data.get("label"),
        "metric": data.get("metric"),
        "nodes": len(nodes),
        "links": len(raw_links),
        "self_loops_skipped": self_loops,
        "rule": (
            f"ETX -> loss = 100*(1-1/sqrt(ETX))^{mac_attempts}, delay/jitter = {link_name}*ETX, rate = {link_name}/ETX"
        )
        if etx
        else f"metric is not ETX: every link is {link_name}",
    }
    return Imported(devices=devices, links=links, sites=(site,) if site else (), provenance=provenance)


def import_into(
    builder: _Builder, spec: ImportSpec, profiles: dict[str, Profile], presets: dict[str, Direction]
) -> Imported | None:
    """The `import:` block of a topology file; problems go to the builder's list."""
    doc: Document = builder.doc
    path = Path(spec.netjson)
    if not path.is_absolute():
        path = Path(doc.file).parent / path
    ok = True
    for key, value, table in (("link", spec.link, presets), ("profile", spec.profile, profiles)):
        if value is not None and value not in table:
            builder.report(("import", key), f"unknown {key} '{value}'{did_you_mean(value, table)}")
            ok = False
    if spec.site is not None and not is_valid_name(spec.site):
        builder.report(("import", "site"), f"site name '{spec.site}' is not allowed")
        ok = False
    if not path.exists():
        builder.report(("import", "netjson"), f"no such file: {path}")
        return None
    if not ok:
        return None
    try:
        return read_netjson(
            path,
            link=presets[spec.link],
            link_name=spec.link,
            mac_attempts=spec.mac_attempts,
            profile=profiles[spec.profile or DEFAULT_PROFILE],
            site=spec.site,
        )
    except InputError as exc:
        builder.problems.extend(exc.problems)
        return None


def import_netjson(
    path: str | Path,
    *,
    link: str = "mesh-2.4ghz",
    mac_attempts: int = 4,
    profile: str = DEFAULT_PROFILE,
    site: str | None = None,
    name: str | None = None,
) -> Topology:
    """A whole topology from a NetJSON file, as `cnlab import netjson` writes it out."""
    if link not in LINK_PRESETS:
        raise InputError(f"unknown link preset '{link}'{did_you_mean(link, LINK_PRESETS)}")
    if profile not in PROFILES:
        raise InputError(f"unknown profile '{profile}'{did_you_mean(profile, PROFILES)}")
    imported = read_netjson(
        path, link=LINK_PRESETS[link], link_name=link, mac_attempts=mac_attempts, profile=PROFILES[profile], site=site
    )
    import networkx as nx

    g: nx.Graph[str] = nx.Graph()
    g.add_nodes_from(imported.devices)
    g.add_edges_from((lk.a, lk.b) for lk in imported.links)
    return Topology(
        name=name or sanitize(str(imported.provenance.get("label") or Path(path).stem)),
        devices=imported.devices,
        links=tuple(imported.links),
        sites=imported.sites,
        allow_partitioned=g.number_of_nodes() > 1 and not nx.is_connected(g),
        description=f"imported from {Path(path).name}",
        provenance=imported.provenance,
    )
