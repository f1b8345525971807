"""The experiment format: every mistake at once as file:line:col, exit 2; references resolved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.errors import InputError
from toolkit.experiment.loader import load_experiment

REPO = Path(__file__).resolve().parents[2]
TWO_SITES = REPO / "experiments" / "topologies" / "two-sites.yaml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


GOOD = f"""\
name: t1
topology: {TWO_SITES}
seed: 7
duration_s: 30
workload: {{model: cbpp, users: 50, week_s: 10}}
timeline:
  - {{name: cut, at_s: 10, partition: {{groups: [west, east]}}}}
  - {{name: mend, after: cut, delay_s: 5, heal: true}}
  - {{at_s: 2, link: {{between: [w1, e1], set: {{delay_ms: 50}}}}}}
  - {{at_s: 3, node: {{device: e2, action: kill}}}}
  - {{after: workload, load: {{factor: 0}}}}
checks:
  - lost_updates == 0
  - converged_within_s(after: mend) < 10
  - {{promql: "sum(p2pvalue_outbox_depth)", op: "<", value: 5}}
"""


def test_a_good_experiment_resolves_times_and_checks(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD))
    assert exp.name == "t1" and exp.seed == 7 and len(exp.topology.devices) == 12
    assert [(e.name, e.at_s) for e in exp.timeline] == [
        ("link1", 2.0),
        ("node1", 3.0),
        ("cut", 10.0),
        ("mend", 15.0),
        ("load1", 30.0),
    ]
    assert [c.metric for c in exp.checks] == ["lost_updates", "converged_within_s", None]
    assert exp.checks[1].args == {"after": "mend"}  # YAML's one-key mapping joined back
    assert exp.checks[2].promql == "sum(p2pvalue_outbox_depth)"
    assert exp.nodes == tuple(exp.topology.devices)


def test_every_mistake_is_reported_at_once_with_its_position(tmp_path):
    path = write(
        tmp_path,
        f"""\
name: t1
topology: {TWO_SITES}
duration_s: -3
workload: {{model: cbpp, users: 50, userz: 3}}
timeline:
  - {{at_s: 10, partition: {{groups: [west, eest]}}}}
  - {{after: nowhere, heal: true}}
  - {{at_s: 5, node: {{device: w9, action: kill}}}}
  - {{at_s: 5, heal: true, load: {{factor: 2}}}}
checks:
  - lost_updates = 0
  - propagation_p95 < 2
""",
    )
    with pytest.raises(InputError) as info:
        load_experiment(path)
    text = str(info.value)
    expected = [
        (3, "duration_s"),
        (4, "unknown key 'userz'"),
        (6, "'eest' is neither a site"),
        (7, "'after: nowhere' names no earlier event"),
        (8, "unknown device 'w9'"),
        (9, "exactly one of partition"),
        (11, "cannot read check"),
        (12, "did you mean 'propagation_p95_s'"),
    ]
    for line, words in expected:
        assert any(p.line == line and words in p.message for p in info.value.problems), (line, words, text)
    assert all(p.file == str(path) and p.col > 0 for p in info.value.problems)


def test_an_inline_topology_reports_its_mistakes_in_the_experiment_file(tmp_path):
    path = write(
        tmp_path,
        """\
name: inline
duration_s: 10
workload: {model: constant, rate_per_s: 5}
topology:
  name: two
  devices: {a: {}, b: {profile: nosuch}}
  links: [{between: [a, c]}]
""",
    )
    with pytest.raises(InputError) as info:
        load_experiment(path)
    lines = sorted((p.line, p.message.split(" ")[0]) for p in info.value.problems)
    assert lines[0][0] == 6 and "nosuch" in str(info.value)
    assert any(p.line == 7 and "unknown device 'c'" in p.message for p in info.value.problems)


def test_a_netjson_topology_is_imported(tmp_path):
    graph = {
        "type": "NetworkGraph",
        "protocol": "olsr",
        "version": "0.8",
        "metric": "etx",
        "nodes": [{"id": "10.0.0.1"}, {"id": "10.0.0.2"}, {"id": "10.0.0.3"}],
        "links": [
            {"source": "10.0.0.1", "target": "10.0.0.2", "cost": 1.0},
            {"source": "10.0.0.2", "target": "10.0.0.3", "cost": 1.5},
        ],
    }
    (tmp_path / "g.json").write_text(json.dumps(graph))
    exp = load_experiment(
        write(
            tmp_path,
            """\
name: nj
topology: {netjson: g.json, site: city}
federation: {on: [city], antientropy_interval_s: 5}
duration_s: 10
workload: {model: constant, rate_per_s: 5}
""",
        )
    )
    assert len(exp.topology.devices) == 3 and len(exp.nodes) == 3
    assert exp.federation.node_settings() == {"antientropy_interval_s": 5.0}
    assert exp.topology.federation.settings["federation"] == {"antientropy_interval_s": 5.0}


def test_cnlab_schema_experiment_and_validation_exit_code(tmp_path, cnlab):
    cp = cnlab("schema", "experiment")
    assert cp.returncode == 0, cp.stderr
    schema = json.loads(cp.stdout)
    assert schema["title"] == "cnlab experiment" and "workload" in schema["properties"]


REMOTE = """\
name: on-hardware
topology:
  name: fleet
  devices:
    r1: {kind: ssh, host: 198.18.255.1}
    r2: {kind: ssh, host: 198.18.255.2}
  links:
    - {between: [r1, r2]}
federation: {nodes_per_process: 2}
duration_s: 20
workload: {model: constant, rate_per_s: 2}
timeline:
  - {name: cut, at_s: 2, partition: {groups: [[r1], [r2]]}}
  - {name: mend, at_s: 5, heal: true}
  - {name: bounce, at_s: 6, node: {device: r2, action: restart}}
  - {name: crash, at_s: 7, node: {device: r1, action: kill}}
  - {name: freeze, at_s: 8, node: {device: r1, action: pause}}
  - {name: power, at_s: 9, device: {device: r2, action: reboot}}
"""


def test_real_devices_refuse_what_they_cannot_do_at_its_place(tmp_path):
    """On a topology of ssh devices, node kill/pause, device reboot and dense mode are refused when
    the file is loaded (nothing is contacted), each at its line, naming the event; partition,
    heal and node restart are accepted."""
    path = write(tmp_path, REMOTE)
    with pytest.raises(InputError) as e:
        load_experiment(path)
    got = [(p.line, p.message) for p in e.value.problems]
    assert [line for line, _ in got] == [9, 16, 17, 18], got
    assert "dense mode (nodes_per_process) is for emulated testbeds" in got[0][1]
    assert got[1][1].startswith("event 'crash': node kill is not available on real devices (kind: ssh)")
    assert "stop, start, restart through their service manager" in got[1][1]
    assert got[2][1].startswith("event 'freeze': node pause is not available on real devices")
    assert got[3][1].startswith("event 'power': device reboot is not available on real devices")
    ok = REMOTE.replace("federation: {nodes_per_process: 2}\n", "").split("  - {name: crash")[0]
    exp = load_experiment(write(tmp_path, ok))
    assert [e.name for e in exp.timeline] == ["cut", "mend", "bounce"]
    assert (exp.timeline[2].line, exp.timeline[2].col) == (14, 5)  # kept for the run-time preflight
