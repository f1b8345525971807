"""The monitor of a real emulated testbed (root): the wire's fidelity scraped per link, the
Prometheus journalled with the testbed, `cnlab monitor`, `cnlab status`, and `cnlab down`
leaving no Prometheus process or port behind."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.testbed.conftest import cli, line, state_dir, testbeds, two_sites  # noqa: F401 (fixtures)
from toolkit.monitor import testbed_monitor
from toolkit.monitor.exporter_process import ExporterProcess
from toolkit.monitor.prometheus import Prometheus, running

from .conftest import node_targets, query, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.prometheus]


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def _value(url: str, expr: str) -> float | None:
    res = query(url, expr)
    return float(res[0]["value"][1]) if res else None


def test_wire_fidelity_per_link_and_nodes_in_one_prometheus(testbeds, local_nodes, cli):  # noqa: F811
    tb = testbeds.up(two_sites(), shaper="wire", wire_shards=2)
    mon = testbed_monitor.start(tb.id, nodes=node_targets(local_nodes))
    assert testbed_monitor.url(tb.id) == mon.url
    rows = [r for r in tb.state.resources() if r["kind"] == "process"]
    assert {r["role"] for r in rows} >= {"prometheus", "wire-exporter", "wire-0", "wire-1"}

    status = cli("status", tb.id)
    assert status.returncode == 0 and f"monitor: {mon.url}" in status.stdout, status.stdout + status.stderr

    health = lambda: {t["labels"]["job"]: t["health"] for t in mon.api("targets")["activeTargets"]}  # noqa: E731
    wait_for(
        lambda: (
            health() == {"prometheus": "up", "p2pvalue": "up", "wire": "up"}
            and len(mon.api("targets")["activeTargets"]) == 5
        ),
        20,
        "every target up",
    )
    assert _value(mon.url, "sum(cnlab_wire_shard_up)") == 2

    # traffic across both sites: frames through several links and both shards
    assert tb.exec("w1", ["ping", "-c", "30", "-i", "0.02", "-q", "e3"]).returncode == 0
    assert tb.exec("w3", ["ping", "-c", "30", "-i", "0.02", "-q", "e1"]).returncode == 0

    # the lateness histogram per link and direction, and its quantile per link
    counts = wait_for(
        lambda: [s for s in query(mon.url, "cnlab_wire_release_lateness_seconds_count > 0")],
        15,
        "lateness observations",
    )
    links = {(s["metric"]["link"], s["metric"]["direction"]) for s in counts}
    assert len(links) >= 2 and all(s["metric"]["src"] and s["metric"]["dst"] for s in counts)
    buckets = query(mon.url, 'cnlab_wire_release_lateness_seconds_bucket{le="+Inf"} > 0')
    assert {(s["metric"]["link"], s["metric"]["direction"]) for s in buckets} == links
    p99 = wait_for(
        lambda: [
            s
            for s in query(
                mon.url,
                "histogram_quantile(0.99, sum by (link, direction, le) (rate(cnlab_wire_release_lateness_seconds_bucket[15s])))",
            )
            if s["value"][1] != "NaN"
        ],
        15,
        "lateness p99 per link",
    )
    assert all(0 <= float(s["value"][1]) <= 0.1 for s in p99)
    bad = [
        (r["name"], r.get("lastError")) for g in mon.api("rules")["groups"] for r in g["rules"] if r["health"] == "err"
    ]
    assert not bad
    wait_for(
        lambda: (
            {s["metric"]["shard"] for s in query(mon.url, "shard:cnlab_wire_release_lateness_seconds:p99")}
            == {"0", "1"}
        ),
        15,
        "the recorded lateness p99 of both shards",
    )

    # the counters are the wire's own: compare with its stats
    stats = tb.link_stats()
    lid = counts[0]["metric"]["link"]
    direction = counts[0]["metric"]["direction"]
    fwd = _value(mon.url, f'cnlab_wire_frames_forwarded_total{{link="{lid}",direction="{direction}"}}')
    assert fwd is not None and 0 < fwd <= stats[lid][direction]["forwarded"]

    # a link taken down drops frames as "down" (static routes keep using it)
    a, b = lid.split("~")
    tb.set_link_up(a, b, False)
    tb.exec(a, ["ping", "-c", "5", "-i", "0.05", "-W", "1", "-q", b])
    wait_for(
        lambda: (_value(mon.url, f'sum(cnlab_wire_frames_down_dropped_total{{link="{lid}"}})') or 0) >= 5,
        15,
        "down-dropped frames counted",
    )
    assert _value(mon.url, f'cnlab_wire_link_up{{link="{lid}"}}') == 0
    tb.set_link_up(a, b, True)

    # node targets come and go through update_targets
    assert testbed_monitor.update_targets(tb.id, "p2pvalue", node_targets(local_nodes)[:1])
    wait_for(
        lambda: sum(1 for t in mon.api("targets")["activeTargets"] if t["labels"]["job"] == "p2pvalue") == 1,
        30,
        "node targets reduced to 1",
    )

    testbed_monitor.stop(tb.id)
    assert not running(mon.pid, mon.start_time)
    assert testbed_monitor.url(tb.id) is None


def test_cli_monitor_and_down_leave_nothing_behind(testbeds, cli, tmp_path):  # noqa: F811
    tb = testbeds.up(line(2, delay_ms=1), shaper="wire")
    started = cli("monitor", "start", tb.id, "--json")
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    mon = Prometheus.open(tb.state.dir / "monitor")
    exporter = ExporterProcess.open(tb.state.dir / "monitor" / "exporter.json")
    assert mon is not None and exporter is not None and info["url"] == mon.url
    assert mon.alive() and exporter.alive() and _port_open(f"{mon.host}:{mon.port}")
    again = cli("monitor", "start", tb.id)
    assert again.returncode == 1 and "monitored already" in again.stderr

    wait_for(lambda: _value(mon.url, "sum(cnlab_wire_shard_up)") == 1, 20, "the wire scraped")
    export = cli("metrics", "export", tb.id, "--out", tmp_path / "export", "--since", "1m")
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "export" / "series.json").exists() and (tmp_path / "export" / "wire_lateness_p99_s.csv").exists()

    kept = tmp_path / "tsdb"
    down = cli("down", tb.id, "--keep-tsdb", kept)
    assert down.returncode == 0, down.stderr
    time.sleep(0.1)
    assert not running(mon.pid, mon.start_time) and not exporter.alive()
    assert not _port_open(f"{mon.host}:{mon.port}") and not _port_open(exporter.address)
    assert (kept / "wal").is_dir()
    assert not tb.state.dir.exists()


def test_down_stops_a_running_prometheus_from_the_journal(testbeds, cli):  # noqa: F811
    tb = testbeds.up(line(2, delay_ms=0), shaper="wire")
    mon = testbed_monitor.start(tb.id, nodes=[])
    exporter = ExporterProcess.open(tb.state.dir / "monitor" / "exporter.json")
    assert exporter is not None
    down = cli("down", tb.id)
    assert down.returncode == 0, down.stderr
    assert not running(mon.pid, mon.start_time) and not exporter.alive()
    assert not _port_open(f"{mon.host}:{mon.port}") and not _port_open(exporter.address)
