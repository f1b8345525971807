"""A real Prometheus scraping real p2pvalue nodes on 127.0.0.1: targets, rules, alerts, target
changes, export, a reopened TSDB, and nothing left behind."""

from __future__ import annotations

import csv
import itertools
import json
import socket
import subprocess
import time

import pytest

from toolkit.errors import RunError
from toolkit.monitor import panels
from toolkit.monitor.export import MAX_POINTS, export, query_range
from toolkit.monitor.prometheus import Prometheus, api_get, free_port, prometheus_bin, running

from .conftest import node_targets, query, wait_for

pytestmark = pytest.mark.prometheus


def _health(mon: Prometheus) -> dict[str, str]:
    return {
        t["labels"]["instance"]: t["health"]
        for t in mon.api("targets")["activeTargets"]
        if t["labels"]["job"] == "p2pvalue"
    }


def _firing(mon: Prometheus, name: str) -> list[dict]:
    return [a for a in mon.api("alerts")["alerts"] if a["labels"]["alertname"] == name and a["state"] == "firing"]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def test_scrapes_nodes_rules_alerts_and_stops_clean(local_nodes, prometheus, tmp_path):
    nodes = local_nodes
    mon = prometheus(node_targets(nodes))
    assert mon.url.startswith("http://127.0.0.1:")
    assert json.loads((mon.dir / "monitor.json").read_text())["pid"] == mon.pid

    # every target up (Prometheus applies discovered targets at most every 5 s)
    wait_for(lambda: set(_health(mon).values()) == {"up"} and len(_health(mon)) == 3, 20, "all 3 nodes up")

    # traffic: a shared object edited on n0 reaches n1 and n2 (remote updates, propagation delay)
    alice = nodes[0].add_user("alice")
    bob, carol = nodes[1].add_user("bob"), nodes[2].add_user("carol")
    r = nodes[0].req("POST", "/api/objects", {"participants": [bob, carol]}, user="alice")
    assert r.status == 201, r.body
    oid = r.json()["id"]
    edits = iter(range(10_000))

    def edit() -> None:  # one more update on n0; counters need increases between scrapes for a rate
        i = next(edits)
        assert (
            nodes[0]
            .req(
                "POST",
                f"/api/objects/{oid}/ops",
                {"ops": [{"op": "set", "key": f"k{i % 50}", "value": i}]},
                user="alice",
            )
            .status
            == 200
        )

    assert alice

    # recording rules return values
    wait_for(
        lambda: (
            query(mon.url, "cnlab:p2pvalue_nodes_up:sum")
            and float(query(mon.url, "cnlab:p2pvalue_nodes_up:sum")[0]["value"][1]) == 3
        ),
        15,
        "nodes_up == 3",
    )

    def positive_rates() -> dict[str, float] | None:
        edit()
        rates = {
            s["metric"]["origin"]: float(s["value"][1])
            for s in query(mon.url, "cnlab:p2pvalue_updates_applied:rate")
            if float(s["value"][1]) > 0
        }
        # the origin node's local rate and the peers' remote rate show up at their own scrapes
        return rates if {"local", "remote"} <= set(rates) else None

    rates = wait_for(positive_rates, 20, "updates applied per second, local and remote")
    assert rates["local"] > 0 and rates["remote"] > 0
    p99 = wait_for(
        lambda: (
            edit()
            or [s for s in query(mon.url, "cnlab:p2pvalue_propagation_delay_seconds:p99") if s["value"][1] != "NaN"]
        ),
        20,
        "propagation p99",
    )
    assert 0 < float(p99[0]["value"][1]) < 60

    # every expression of every console and dashboard is valid PromQL to this server
    for board in panels.BOARDS:
        for expr in panels.all_exprs(board):
            api_get(mon.url, "query", query=expr)

    # kill a node: P2PvalueNodeDown fires for it; restart it: the alert resolves
    victim = nodes[1]
    victim.kill()
    alerts = wait_for(lambda: _firing(mon, "P2PvalueNodeDown"), 30, "P2PvalueNodeDown firing")
    assert [a["labels"]["instance"] for a in alerts] == [f"127.0.0.1:{victim.metrics_port}"]
    assert alerts[0]["labels"]["device"] == "d1"
    victim.start()
    wait_for(
        lambda: not _firing(mon, "P2PvalueNodeDown") and _health(mon).get(f"127.0.0.1:{victim.metrics_port}") == "up",
        30,
        "P2PvalueNodeDown resolved after the restart",
    )

    # a node taken out of the federation leaves the targets
    mon.set_targets(node_targets(nodes)[:2])
    wait_for(lambda: len(_health(mon)) == 2, 30, "the removed node gone from the targets")

    # export: CSV and JSON of the headline series
    t_end = time.time()
    result = export(mon.url, tmp_path / "export", mon.started_at, t_end)
    doc = json.loads((tmp_path / "export" / "series.json").read_text())
    assert doc["step_s"] == 1.0
    up = doc["series"]["nodes_up"]["series"]
    assert up and max(float(v) for _, v in up[0]["values"]) == 3
    with open(tmp_path / "export" / "node_up.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["device"] for r in rows} == {"d0", "d1", "d2"} and {r["value"] for r in rows} >= {"0", "1"}
    assert "nodes_up" not in result.empty and result.points > 0
    # the nodes' CPU: a rate, its range widened to three scrape intervals (1 s here: 15 s stays)
    cpu = doc["series"]["node_cpu_s_per_s"]
    assert cpu["expr"] == 'sum(rate(process_cpu_seconds_total{job="p2pvalue"}[15s]))'
    assert cpu["series"] and max(float(v) for _, v in cpu["series"][0]["values"]) > 0

    # stop: no process, no port; the TSDB kept elsewhere opens again with the same binary
    pid, port = mon.pid, mon.port
    start_time = mon.start_time
    kept = tmp_path / "kept-tsdb"
    mon.stop(keep_tsdb=kept)
    assert not running(pid, start_time)
    assert not _port_open("127.0.0.1", port)
    assert not (mon.dir / "monitor.json").exists()


def test_reopened_tsdb_answers_queries(local_nodes, prometheus, tmp_path):
    mon = prometheus(node_targets(local_nodes[:1]))
    wait_for(lambda: _health(mon).get(f"127.0.0.1:{local_nodes[0].metrics_port}") == "up", 20, "node up")
    wait_for(lambda: query(mon.url, "cnlab:p2pvalue_nodes_up:sum"), 15, "a recorded sample")
    wait_for(
        lambda: [s for s in query(mon.url, 'count_over_time(up{job="p2pvalue"}[1m])') if float(s["value"][1]) >= 14],
        40,
        "14 s of samples",
    )
    t_end = time.time()
    # a range of more than 11,000 steps is fetched in chunks and joined: no gap, no duplicate
    step = 0.001  # Prometheus's finest step
    start = t_end - 12.0
    points = query_range(mon.url, 'up{job="p2pvalue"}', start, t_end, step)[0]["values"]
    times = [t for t, _ in points]
    assert len(times) > MAX_POINTS and times == sorted(set(times))
    assert all(abs((b - a) - step) < 1e-6 for a, b in itertools.pairwise(times))
    kept = tmp_path / "kept"
    mon.stop(keep_tsdb=kept)
    # reopen it the way docs/monitoring.md says: prometheus --storage.tsdb.path DIR
    port = free_port("127.0.0.1")
    cfg = tmp_path / "empty.yml"
    cfg.write_text("global: {}\n")
    proc = subprocess.Popen(
        [
            prometheus_bin(),
            f"--storage.tsdb.path={kept}",
            f"--config.file={cfg}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        got = wait_for(lambda: _query_at(url, "cnlab:p2pvalue_nodes_up:sum", t_end), 30, "the kept series")
        assert float(got[0]["value"][1]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _query_at(url: str, expr: str, t: float) -> list[dict]:
    try:
        return api_get(url, "query", query=expr, time=f"{t:.3f}")["result"]
    except RunError:  # not up yet
        return []


def test_missing_binary_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_BIN", str(tmp_path / "nope"))
    with pytest.raises(RunError, match="apt-get install prometheus"):
        Prometheus.start(tmp_path / "m", [], testbed="t")
