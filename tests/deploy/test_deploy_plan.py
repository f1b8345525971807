"""The federation plan, pure: no root, no processes. Topology files with a federation block ->
FederationPlan: domains, trust, listen addresses, files, accounts, groups, rendered configs; and
every mistake in the block reported at file:line:col."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
import yaml

from toolkit.deploy.plan import FederationPlan, plan_federation, trust_sets
from toolkit.errors import InputError
from toolkit.images import load_manifest
from toolkit.testbed.plan import plan_testbed
from toolkit.topology.loader import load_topology

TOPO = """\
name: two-sites
sites: {west: {}, east: {}}
devices:
  w1: {site: west}
  w2: {site: west}
  w3: {site: west}
  e1: {site: east}
  e2: {site: east}
  e3: {site: east}
links:
  - between: [w1, w2]
  - between: [w2, w3]
  - between: [w3, e3]
  - between: [e3, e2]
  - between: [e2, e1]
  - between: [e1, w1]
"""


def topo_with(tmp_path: Path, federation: str, name: str = "t.yaml"):
    f = tmp_path / name
    f.write_text(TOPO + textwrap.dedent(federation))
    return load_topology(f)


def keys_for(devices) -> dict[str, str]:
    return {d: base64.b64encode(bytes([i + 1]) * 32).decode() for i, d in enumerate(devices)}


def plan(topo, **kw) -> FederationPlan:
    tp = plan_testbed(topo, "tb1", shaper="wire", state_dir="/run/cnlab/testbeds/tb1")
    return plan_federation(
        topo, tp, load_manifest("p2pvalue"), state_dir="/run/cnlab/testbeds/tb1", keys=keys_for(topo.devices), **kw
    )


def test_trust_all_default_domains_listen_and_files(tmp_path):
    topo = topo_with(tmp_path, "federation: {image: p2pvalue, accounts: 2}\n")
    p = plan(topo)
    assert list(p.nodes) == ["w1", "w2", "w3", "e1", "e2", "e3"]
    w1 = p.nodes["w1"]
    assert w1.domain == "w1.two-sites"
    assert w1.trusted_peers == ["w2.two-sites", "w3.two-sites", "e1.two-sites", "e2.two-sites", "e3.two-sites"]
    assert w1.accounts == ["user1", "user2"]
    assert p.trust_pairs() == 15 and p.mode == "fork"
    # client on every address of the namespace, federation on the shaped service address,
    # metrics on the management address
    assert w1.listen["client"] == {"host": "0.0.0.0", "port": 8080}
    assert w1.listen["federation"] == {"host": w1.service_addr, "port": 8448}
    assert w1.listen["metrics"] == {"host": w1.mgmt_addr, "port": 9108}
    assert w1.service_addr.startswith("198.19.") and w1.mgmt_addr.startswith("198.18.")
    assert w1.client_url == f"http://{w1.mgmt_addr}:8080"
    for path in (w1.node_dir, w1.data_dir, w1.config_path, w1.key_path, w1.admin_token_path, w1.log_path):
        assert path.startswith("/run/cnlab/testbeds/tb1/nodes/w1")
    cfg = yaml.safe_load(w1.config_text)
    assert cfg["domain"] == "w1.two-sites"
    assert cfg["admin_token_file"] == w1.admin_token_path and "admin_token" not in cfg
    peers = {x["domain"]: x for x in cfg["trusted_peers"]}
    e2 = p.nodes["e2"]
    assert peers["e2.two-sites"] == {
        "domain": "e2.two-sites",
        "address": f"http://{e2.service_addr}:8448",
        "public_key": e2.public_key,
    }


def test_every_config_is_accepted_by_the_node(tmp_path):
    from p2pvalue_node.config import parse_config_text

    topo = topo_with(
        tmp_path,
        """\
        federation:
          trust: site
          limits: {max_participants: 9}
          settings: {federation: {antientropy_interval_s: 2.5}}
        """,
    )
    for n in plan(topo).nodes.values():
        cfg = parse_config_text(n.config_text, n.device)
        assert cfg.limits.max_participants == 9 and cfg.federation.antientropy_interval_s == 2.5


def test_trust_site_and_pairs_are_symmetric(tmp_path):
    topo = topo_with(tmp_path, "federation: {trust: site, trust_pairs: [[w1, e1]]}\n")
    t = trust_sets(topo.federation, topo)
    assert t["w2"] == {"w1", "w3"}
    assert t["w1"] == {"w2", "w3", "e1"} and "w1" in t["e1"]
    assert all(a in t[b] for a in t for b in t[a])
    p = plan(topo)
    assert p.nodes["e2"].trusted_peers == ["e3.two-sites", "e1.two-sites"] or sorted(p.nodes["e2"].trusted_peers) == [
        "e1.two-sites",
        "e3.two-sites",
    ]


def test_trust_none_on_a_site_with_a_suffix(tmp_path):
    topo = topo_with(
        tmp_path, "federation: {on: [west], trust: none, domain_suffix: lab.example, accounts: [alice, bob]}\n"
    )
    p = plan(topo)
    assert list(p.nodes) == ["w1", "w2", "w3"]
    assert all(n.trusted_peers == [] for n in p.nodes.values())
    assert p.nodes["w2"].domain == "w2.lab.example" and p.nodes["w2"].accounts == ["alice", "bob"]


def test_dense_groups(tmp_path):
    topo = topo_with(tmp_path, "federation: {}\n")
    p = plan(topo, nodes_per_process=4)
    assert p.mode == "dense" and p.groups() == {0: ["w1", "w2", "w3", "e1"], 1: ["e2", "e3"]}


def test_json_round_trip_without_configs(tmp_path):
    p = plan(topo_with(tmp_path, "federation: {}\n"))
    back = FederationPlan.from_json(p.to_json())
    assert back.nodes["e3"].trusted_peers == p.nodes["e3"].trusted_peers
    assert back.nodes["e3"].config_text == "" and p.nodes["e3"].config_text
    assert FederationPlan.from_json(p.to_json(configs=True)) == p


def test_federation_block_mistakes_are_reported_with_positions(tmp_path):
    # the topology above ends at line 16; the block starts at line 17
    with pytest.raises(InputError) as e:
        topo_with(
            tmp_path,
            """\
            federation:
              on: [w1, w2]
              trust: friends
            """,
            name="bad.yaml",
        )
    assert "bad.yaml:19:10: federation.trust: Input should be 'all', 'site' or 'none'" in str(e.value)
    with pytest.raises(InputError) as e2:
        topo_with(
            tmp_path,
            """\
            federation:
              on: [w1, w2, nowhere]
              trust_pairs: [[w1, x9]]
              accounts: [Alice]
              domain_suffix: "Not_A_Domain"
            """,
            name="bad2.yaml",
        )
    lines = str(e2.value).splitlines()
    assert len(lines) == 4, lines  # every mistake at once
    assert "bad2.yaml:18:16: 'nowhere' is neither a device nor a site" in lines[0], lines
    assert "bad2.yaml:19:22: 'x9' runs no node of this federation" in lines[1], lines
    assert "bad2.yaml:20:14: username 'Alice' is not allowed" in lines[2], lines
    assert "bad2.yaml:21:18: domain suffix 'Not_A_Domain' is not allowed" in lines[3], lines


def test_settings_may_not_override_what_the_deployer_sets(tmp_path):
    topo = topo_with(tmp_path, "federation: {settings: {domain: evil}}\n")
    with pytest.raises(InputError, match="may not set domain"):
        plan(topo)


def test_a_second_image_needs_no_deployer_change(tmp_path):
    img = tmp_path / "other"
    img.mkdir()
    (img / "image.yaml").write_text(
        textwrap.dedent("""\
        name: other
        version: 2.0.0
        ports:
          client: {default: 7000, plane: data}
          federation: {default: 7001, plane: data}
          metrics: {default: 7002, plane: management}
        health: {port: client, path: /ok}
        metrics: {port: metrics, path: /m}
        config: {render: tests.deploy.fake_image.render}
        keys: {ensure: tests.deploy.fake_image.ensure_key}
        start: {command: [other-node, --config, "{{ config_dir }}/node.json"]}
        """)
    )
    m = load_manifest(img)
    assert m.name == "other" and m.ports["federation"].default == 7001 and m.health_path == "/ok"
    assert m.ensure_key(tmp_path / "nodes" / "w1" / "k") == "key-of-w1"
    topo = topo_with(tmp_path, "federation: {image: other, trust: site}\n")
    tp = plan_testbed(topo, "tb1", shaper="wire", state_dir="/s")
    p = plan_federation(topo, tp, m, state_dir="/s", keys=keys_for(topo.devices))
    assert p.image == "other" and p.health_path == "/ok"
    assert '"peers": ["w1.two-sites", "w3.two-sites"]' in p.nodes["w2"].config_text
    assert p.nodes["w2"].listen["client"]["port"] == 7000


def test_manifest_mistakes_name_the_field(tmp_path):
    img = tmp_path / "broken"
    img.mkdir()
    (img / "image.yaml").write_text("name: broken\nversion: 1\nports: {}\nhealth: {port: client, path: /h}\n")
    with pytest.raises(InputError) as e:
        load_manifest(img)
    assert "image.yaml" in str(e.value) and "metrics" in str(e.value)
    with pytest.raises(InputError, match="no node image 'nope'"):
        load_manifest("nope")


def test_p2pvalue_manifest():
    m = load_manifest("p2pvalue")
    assert m.health_port == "client" and m.metrics_path == "/metrics"
    assert m.serve_hook and m.start_hook and m.load_config_hook and "p2pvalue_node.server" in m.launch_preload
    assert {p.plane for p in m.ports.values()} == {"data", "management"}


def test_neighbour_table_sizes():
    from toolkit.testbed.hostlimits import neigh_sizes

    small = neigh_sizes(6)
    assert small["net.ipv4.neigh.default.gc_thresh3"] == 1024  # the kernel's default is enough
    ff = neigh_sizes(246)
    assert [ff[f"net.ipv4.neigh.default.gc_thresh{i}"] for i in (1, 2, 3)] == [2048, 8192, 16384]
    assert ff["net.ipv6.neigh.default.gc_thresh3"] == 16384
    assert neigh_sizes(1000)["net.ipv4.neigh.default.gc_thresh3"] == 65536


def test_launcher_protocol_round_trips_and_refuses_unknown_requests(tmp_path):
    from toolkit.deploy.direct import launch_spec
    from toolkit.deploy.protocol import LaunchSpec, NodeProc, Reply, Request

    req = Request("kill", ["w1"])
    assert Request.decode(req.encode()) == req
    for bad in (b'{"op": "format-disk"}\n', b'{"op": "stop", "devices": "w1"}\n', b"[]\n"):
        with pytest.raises(ValueError):
            Request.decode(bad)
    rep = Reply(True, {"w1": NodeProc("exited", pid=7, exit_code=-9, requested=True)})
    assert Reply.decode(rep.encode()) == rep
    p = plan(topo_with(tmp_path, "federation: {}\n"), nodes_per_process=4)
    spec = launch_spec(p, load_manifest("p2pvalue"))
    assert LaunchSpec.from_json(spec.to_json()) == spec
    assert spec.mode == "dense" and spec.start == "p2pvalue_node.server.start_shared_node"
    assert spec.nodes["e2"].group == 1 and spec.nodes["e2"].listen["federation"]["host"] == p.nodes["e2"].service_addr
    assert spec.nodes["e2"].cgroup_tasks == []  # dense hosts join no device's cgroup
