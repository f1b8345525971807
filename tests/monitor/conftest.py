"""Fixtures for monitor tests: real p2pvalue nodes on 127.0.0.1 and a real Prometheus scraping them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from toolkit.monitor.prometheus import Prometheus, ScrapeTarget, api_get


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.2) -> object:
    """Poll until predicate() is truthy; fail naming `what` after timeout_s (a bound, not a timing assert)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


def node_targets(nodes) -> list[ScrapeTarget]:
    return [
        ScrapeTarget("p2pvalue", f"127.0.0.1:{n.metrics_port}", {"device": f"d{i}", "domain": n.domain})
        for i, n in enumerate(nodes)
    ]


def query(url: str, expr: str) -> list[dict]:
    return api_get(url, "query", query=expr)["result"]


@pytest.fixture
def local_nodes(tmp_path) -> Iterator[list]:
    """Three real federating p2pvalue-node processes on 127.0.0.1."""
    from p2pvalue_node.testing import make_nodes

    nodes = make_nodes(tmp_path / "nodes", 3)
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


@pytest.fixture
def prometheus(tmp_path) -> Iterator[Callable[..., Prometheus]]:
    """Start real Prometheus servers with `prometheus(targets, **kw)`; all stopped at teardown."""
    started: list[Prometheus] = []

    def start(targets, **kw) -> Prometheus:
        kw.setdefault("testbed", "t")
        mon = Prometheus.start(tmp_path / f"mon{len(started)}", targets, **kw)
        started.append(mon)
        return mon

    yield start
    for mon in started:
        mon.stop()
