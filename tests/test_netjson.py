"""NetJSON NetworkGraph import: the real FFWien data, the ETX rule, and mistakes in the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.errors import InputError
from toolkit.topology.dump import to_yaml
from toolkit.topology.loader import load_topology
from toolkit.topology.netjson import etx_direction, import_netjson
from toolkit.topology.presets import LINK_PRESETS


def graph(tmp_path: Path, nodes: list[dict], links: list[dict], metric: str = "ETX") -> Path:
    path = tmp_path / "g.json"
    path.write_text(
        json.dumps(
            {
                "type": "NetworkGraph",
                "protocol": "OLSR",
                "version": "0.8",
                "metric": metric,
                "nodes": nodes,
                "links": links,
            },
            indent=2,
        )
    )
    return path


def test_ffwien_imports_whole_and_round_trips(ffwien: Path, tmp_path: Path) -> None:
    topo = import_netjson(ffwien)
    raw = json.loads(ffwien.read_text())
    self_loops = sum(1 for link in raw["links"] if link["source"] == link["target"])
    assert len(topo.devices) == len(raw["nodes"]) == 246
    assert topo.provenance["links"] == len(raw["links"]) == 453
    assert topo.provenance["self_loops_skipped"] == self_loops == 58
    assert len(topo.links) == 453 - 58
    assert {d.meta["netjson_id"] for d in topo.devices.values()} == {n["id"] for n in raw["nodes"]}
    assert not topo.allow_partitioned  # the mesh is connected
    out = tmp_path / "ffwien.yaml"
    out.write_text(to_yaml(topo))
    again = load_topology(out)
    assert again.devices == topo.devices
    assert {lk.key: (lk.forward, lk.reverse) for lk in again.links} == {
        lk.key: (lk.forward, lk.reverse) for lk in topo.links
    }


def test_etx_rule() -> None:
    mesh = LINK_PRESETS["mesh-2.4ghz"]
    perfect = etx_direction(mesh, 1.0, 4)
    assert (perfect.delay_ms, perfect.loss_pct, perfect.rate_kbit) == (mesh.delay_ms, 0.0, mesh.rate_kbit)
    poor = etx_direction(mesh, 4.0, 4)  # each attempt gets through half the time
    assert poor.delay_ms == mesh.delay_ms * 4 and poor.jitter_ms == mesh.jitter_ms * 4
    assert poor.loss_pct == pytest.approx(100 * 0.5**4)
    assert poor.rate_kbit == mesh.rate_kbit // 4
    assert etx_direction(mesh, 4.0, 1).loss_pct == pytest.approx(50.0)


def test_directed_links_become_one_asymmetric_link_and_ids_become_names(tmp_path: Path) -> None:
    path = graph(
        tmp_path,
        [{"id": "10.0.0.1"}, {"id": "10.0.0.2"}, {"id": "10-0-0-1"}],
        [
            {"source": "10.0.0.1", "target": "10.0.0.2", "cost": 1.0},
            {"source": "10.0.0.2", "target": "10.0.0.1", "cost": 4.0},
            {"source": "10-0-0-1", "target": "10.0.0.2", "cost": 2},
        ],
    )
    topo = import_netjson(path)
    assert sorted(topo.devices) == ["n10-0-0-1", "n10-0-0-1-2", "n10-0-0-2"]
    link = topo.link_between("n10-0-0-1", "n10-0-0-2")
    assert link.direction("n10-0-0-1", "n10-0-0-2").loss_pct == 0
    assert link.direction("n10-0-0-2", "n10-0-0-1").loss_pct == pytest.approx(6.25)
    assert len(topo.links) == 2


def test_other_metrics_keep_the_preset(tmp_path: Path) -> None:
    path = graph(tmp_path, [{"id": "a"}, {"id": "b"}], [{"source": "a", "target": "b", "cost": 255}], metric="tq")
    topo = import_netjson(path, link="p2p-5ghz")
    assert topo.links[0].forward == LINK_PRESETS["p2p-5ghz"]
    assert "not ETX" in topo.provenance["rule"]


def test_disconnected_graph_is_marked_partitioned(tmp_path: Path) -> None:
    path = graph(tmp_path, [{"id": "a"}, {"id": "b"}, {"id": "c"}], [{"source": "a", "target": "b", "cost": 1}])
    assert import_netjson(path).allow_partitioned


def test_mistakes_in_the_netjson_file_are_reported_with_positions(tmp_path: Path) -> None:
    path = graph(
        tmp_path,
        [{"id": "a"}, {"id": "b"}, {"label": "no id"}],
        [
            {"source": "a", "target": "x", "cost": 1},
            {"source": "a", "target": "b", "cost": "high"},
            {"source": "a", "target": "b", "cost": 0.5},
        ],
    )
    with pytest.raises(InputError) as info:
        import_netjson(path)
    found = [str(p) for p in info.value.problems]
    assert len(found) == 4, found
    text = path.read_text().splitlines()

    def line_of(fragment: str, nth: int = 0) -> int:
        return [i for i, t in enumerate(text, 1) if fragment in t][nth]

    expected = {
        line_of("no id") - 1: "non-empty string 'id'",  # the node's mapping opens a line above
        line_of('"x"'): "'x' is not one",
        line_of("high"): "finite number",
        line_of("0.5"): "at least 1",
    }
    for line, needle in expected.items():
        assert any(f"g.json:{line}:" in f and needle in f for f in found), (line, needle, found)


def test_a_file_that_is_not_a_network_graph(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text('{"type": "DeviceList", "devices": []}')
    with pytest.raises(InputError, match="not a NetJSON NetworkGraph"):
        import_netjson(path)


def test_import_block_in_a_topology_file(ffwien: Path, tmp_path: Path) -> None:
    topo_file = tmp_path / "t.yaml"
    topo_file.write_text(f"""
name: ff
import: {{netjson: {ffwien}, link: p2p-5ghz, profile: alix, site: wien}}
devices:
  n1788: {{profile: atom-n2600}}
links:
  - {{between: [n1788, n1574], delay_ms: 40}}
""")
    topo = load_topology(topo_file)
    assert len(topo.devices) == 246 and len(topo.links) == 395
    assert topo.devices["n1788"].profile.name == "atom-n2600" and topo.devices["n1788"].site == "wien"
    assert topo.devices["n1789"].profile.name == "alix"
    assert topo.link_between("n1574", "n1788").forward.delay_ms == 40
    assert topo.sites == ("wien",)
    topo_file.write_text("name: ff\nimport: {netjson: missing.json, link: mesh-5ghz}\n")
    with pytest.raises(InputError) as info:
        load_topology(topo_file)
    messages = [str(p) for p in info.value.problems]
    assert any(":2:" in m and "unknown link 'mesh-5ghz'" in m for m in messages)
    assert any(":2:" in m and "no such file" in m for m in messages)
