"""The monitor of a deployed federation: a 6-device wire testbed with a P2Pvalue node on every
device (the deploy package's fork launcher), scraped over the management network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.testbed.conftest import cli, state_dir, testbeds, two_sites  # noqa: F401 (fixtures)
from toolkit.monitor import testbed_monitor
from toolkit.monitor.exporter_process import ExporterProcess
from toolkit.monitor.prometheus import running

from .conftest import query, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.prometheus]
REPO = Path(__file__).resolve().parents[2]


def _firing(mon, name: str) -> list[dict]:
    return [a for a in mon.api("alerts")["alerts"] if a["labels"]["alertname"] == name and a["state"] == "firing"]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def test_deployed_six_nodes_scraped_alerted_and_removed(testbeds, cli):  # noqa: F811
    from toolkit.deploy.direct import deploy

    tb = testbeds.up(two_sites(), shaper="wire")
    dep = deploy(tb)
    assert len(dep.nodes) == 6
    mon = testbed_monitor.start(tb.id)  # node targets from the deployment
    nodes = {t.labels["device"]: t for t in mon.targets() if t.job == "p2pvalue"}
    assert set(nodes) == set(dep.nodes)
    assert all(t.address == f"{dep.nodes[d].mgmt_addr}:{dep.nodes[d].metrics_port}" for d, t in nodes.items())

    def health() -> dict[str, str]:
        return {t["labels"].get("device", t["labels"]["job"]): t["health"] for t in mon.api("targets")["activeTargets"]}

    wait_for(lambda: len(health()) == 8 and set(health().values()) == {"up"}, 20, "6 nodes + wire + prometheus up")
    wait_for(
        lambda: [s for s in query(mon.url, "cnlab:p2pvalue_nodes_up:sum") if float(s["value"][1]) == 6],
        15,
        "the recorded nodes_up reaching 6",
    )
    reach = wait_for(
        lambda: [s for s in query(mon.url, "cnlab:p2pvalue_peers_reachable:ratio") if s["value"][1] != "NaN"],
        15,
        "reachability ratio",
    )
    assert 0 <= float(reach[0]["value"][1]) <= 1

    # federation traffic crosses the wire: lateness per link appears
    tb.exec("w1", ["ping", "-c", "20", "-i", "0.05", "-q", "e3"])
    per_link = wait_for(
        lambda: query(mon.url, "cnlab_wire_release_lateness_seconds_count > 0"), 15, "lateness per link"
    )
    assert {s["metric"]["link"] for s in per_link}

    # a killed node fires P2PvalueNodeDown; started again, the alert resolves
    dep.kill("w2")
    alerts = wait_for(lambda: _firing(mon, "P2PvalueNodeDown"), 30, "P2PvalueNodeDown firing")
    assert [a["labels"]["device"] for a in alerts] == ["w2"]
    dep.start("w2")
    wait_for(
        lambda: not _firing(mon, "P2PvalueNodeDown") and health().get("w2") == "up", 45, "P2PvalueNodeDown resolved"
    )

    # a node stopped on request leaves the targets (no alert); started again, it is back
    dep.stop("e1")
    assert testbed_monitor.sync_node_targets(tb.id)
    wait_for(lambda: "e1" not in health() and len(health()) == 7, 30, "e1 gone from the targets")
    # scrapes between the stop and the target's removal may have seen it down: once it is gone
    # from the targets, no alert is left for it
    wait_for(lambda: not _firing(mon, "P2PvalueNodeDown"), 30, "no alert for a node stopped on request")
    dep.start("e1")
    assert testbed_monitor.sync_node_targets(tb.id)
    wait_for(lambda: health().get("e1") == "up", 30, "e1 scraped again")

    exporter = ExporterProcess.open(tb.state.dir / "monitor" / "exporter.json")
    assert exporter is not None
    down = cli("down", tb.id)
    assert down.returncode == 0, down.stderr
    assert not running(mon.pid, mon.start_time) and not exporter.alive()
    assert not _port_open(mon.host, mon.port)


def test_cli_up_deploy_starts_prometheus_and_node_commands_move_targets(cli, state_dir):  # noqa: F811
    from tests.testbed.conftest import leftovers
    from toolkit.testbed import naming

    tid = naming.random_id()
    up = cli(
        "up", REPO / "experiments/topologies/line-3.yaml", "--id", tid, "--deploy", "--shaper", "wire", timeout=300
    )
    try:
        assert up.returncode == 0, up.stderr
        assert "/consoles/federation.html" in up.stderr
        url = testbed_monitor.url(tid)
        assert url is not None
        status = cli("status", tid)
        assert f"monitor: {url}" in status.stdout, status.stdout
        mon = testbed_monitor.open_monitor(tid)
        assert mon is not None

        def devices() -> set[str]:
            return {
                t["labels"]["device"] for t in mon.api("targets")["activeTargets"] if t["labels"]["job"] == "p2pvalue"
            }

        wait_for(lambda: devices() == {"a", "b", "c"}, 20, "3 node targets")
        stop = cli("node", "stop", tid, "b")
        assert stop.returncode == 0, stop.stderr
        wait_for(lambda: devices() == {"a", "c"}, 30, "b gone from the targets after `cnlab node stop`")
        start = cli("node", "start", tid, "b")
        assert start.returncode == 0, start.stderr
        wait_for(lambda: devices() == {"a", "b", "c"}, 30, "b back after `cnlab node start`")
    finally:
        down = cli("down", tid)
    assert down.returncode == 0, down.stderr
    assert not running(mon.pid, mon.start_time) and not _port_open(mon.host, mon.port)
    assert leftovers(tid) == []


def test_cli_up_deploy_no_monitor(cli, state_dir):  # noqa: F811
    from toolkit.testbed import naming

    tid = naming.random_id()
    up = cli(
        "up",
        REPO / "experiments/topologies/line-3.yaml",
        "--id",
        tid,
        "--deploy",
        "--no-monitor",
        "--shaper",
        "wire",
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert testbed_monitor.url(tid) is None
        assert not (state_dir / tid / "monitor").exists()
    finally:
        down = cli("down", tid)
    assert down.returncode == 0, down.stderr
