"""The wire's fidelity as Prometheus metrics: a small exporter in the root namespace.

The wire processes live in the wire namespace, which has no route to the root namespace where
Prometheus runs, but their control sockets are Unix sockets on the filesystem. So this exporter
runs in the root namespace, binds 127.0.0.1 (or the management address), and on every scrape asks
each wire shard for its `stats` (the counters and lateness histogram the wire keeps anyway): the
wire's hot path does no extra work for metrics, and one `stats` reply per scrape is all it costs.

    python -m toolkit.monitor.wire_exporter --socket wire-0.sock --socket wire-1.sock \
        --listen 127.0.0.1:0            # prints "ready PORT" on stdout, serves /metrics

Series (labels `link`, `direction` forward|reverse, `src`, `dst`, `shard`; one set per link and
direction, never per peer pair):

| metric | type |
|---|---|
| `cnlab_wire_frames_received_total` | counter: frames read from the sending end |
| `cnlab_wire_frames_forwarded_total` | counter |
| `cnlab_wire_frames_lost_total` | counter: dropped by the loss model |
| `cnlab_wire_frames_queue_dropped_total` | counter: over the rate limiter's backlog |
| `cnlab_wire_frames_down_dropped_total` | counter: the link was down |
| `cnlab_wire_frames_ring_dropped_total` | counter: lost at the receive ring (the wire fell behind) |
| `cnlab_wire_frames_send_errors_total` | counter |
| `cnlab_wire_bytes_forwarded_total` | counter |
| `cnlab_wire_frames_queued` | gauge: scheduled, not yet released |
| `cnlab_wire_release_lateness_seconds` | histogram: release time minus scheduled time |
| `cnlab_wire_release_lateness_max_seconds` | gauge: the largest lateness since the wire started |
| `cnlab_wire_link_up` | gauge (per link, no direction) |
| `cnlab_wire_configured_delay_seconds`, `cnlab_wire_configured_loss_ratio` | gauges: the link's current settings |
| `cnlab_wire_shard_up{shard}` | gauge: 1 if the shard answered this scrape |
| `cnlab_wire_uptime_seconds{shard}` | gauge |
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import RunError
from ..wire.control import WireClient

COUNTERS = (  # stats field -> metric name (without _total)
    ("received", "cnlab_wire_frames_received", "Frames read from the sending end of a link direction"),
    ("forwarded", "cnlab_wire_frames_forwarded", "Frames released to the receiving end"),
    ("lost", "cnlab_wire_frames_lost", "Frames dropped by the loss model"),
    ("queue_drops", "cnlab_wire_frames_queue_dropped", "Frames dropped because the rate limiter's backlog was full"),
    ("dropped_down", "cnlab_wire_frames_down_dropped", "Frames dropped because the link was down"),
    ("ring_drops", "cnlab_wire_frames_ring_dropped", "Frames lost at the wire's receive ring (it fell behind)"),
    ("send_errors", "cnlab_wire_frames_send_errors", "Frames the kernel refused to send"),
    ("bytes_forwarded", "cnlab_wire_bytes_forwarded", "Bytes of frames released to the receiving end"),
)
LABELS = ["link", "direction", "src", "dst", "shard"]


def _ends(link_id: str, direction: str) -> tuple[str, str]:
    a, sep, b = link_id.partition("~")
    if not sep:
        return "", ""
    return (a, b) if direction == "forward" else (b, a)


class WireCollector(Collector):
    """A client_python collector over the `stats` of one or more wire control sockets."""

    def __init__(self, sockets: Sequence[str | Path], timeout_s: float = 5.0, reuse_s: float = 0.5) -> None:
        self.sockets = [str(s) for s in sockets]
        self.timeout_s = timeout_s
        self.reuse_s = reuse_s
        self._clients: dict[str, WireClient] = {}
        self._lock = threading.Lock()  # scrapes may overlap; a WireClient is not thread-safe
        self._last: tuple[float, list[tuple[str, dict[str, Any] | None]]] = (-1e9, [])
        self.errors: dict[str, str] = {}

    def _stats(self, sock: str) -> dict[str, Any] | None:
        client = self._clients.get(sock)
        if client is None:
            client = self._clients[sock] = WireClient(sock, timeout=self.timeout_s)
        try:
            reply = client.stats()
        except RunError as e:  # reported as cnlab_wire_shard_up 0 and on stderr, then retried
            client.close()
            if self.errors.get(sock) != str(e):
                print(f"wire_exporter: {e}", file=sys.stderr, flush=True)
            self.errors[sock] = str(e)
            return None
        self.errors.pop(sock, None)
        return reply

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            # Scrapes that queued up behind a slow one reuse its replies instead of asking every
            # shard again (each `stats` holds that shard's forwarding loop).
            at, replies = self._last
            if time.monotonic() - at > self.reuse_s:
                replies = [(str(i), self._stats(s)) for i, s in enumerate(self.sockets)]
                self._last = (time.monotonic(), replies)
        shard_up = GaugeMetricFamily(
            "cnlab_wire_shard_up", "1 if the wire shard answered this scrape", labels=["shard"]
        )
        uptime = GaugeMetricFamily(
            "cnlab_wire_uptime_seconds", "Seconds since the wire shard started", labels=["shard"]
        )
        counters = {f: CounterMetricFamily(name, doc, labels=LABELS) for f, name, doc in COUNTERS}
        queued = GaugeMetricFamily("cnlab_wire_frames_queued", "Frames scheduled and not yet released", labels=LABELS)
        late = HistogramMetricFamily(
            "cnlab_wire_release_lateness_seconds",
            "How long after its scheduled release time a frame was handed to the kernel",
            labels=LABELS,
        )
        late_max = GaugeMetricFamily(
            "cnlab_wire_release_lateness_max_seconds",
            "Largest release lateness since the wire shard started",
            labels=LABELS,
        )
        delay = GaugeMetricFamily("cnlab_wire_configured_delay_seconds", "Configured one-way delay", labels=LABELS)
        loss = GaugeMetricFamily("cnlab_wire_configured_loss_ratio", "Configured loss probability", labels=LABELS)
        link_up = GaugeMetricFamily("cnlab_wire_link_up", "1 if the link is up", labels=["link", "shard"])
        for shard, reply in replies:
            shard_up.add_metric([shard], 0.0 if reply is None else 1.0)
            if reply is None:
                continue
            uptime.add_metric([shard], float(reply.get("uptime_s", 0.0)))
            for link_id, link in sorted(reply["links"].items()):
                link_up.add_metric([link_id, shard], 1.0 if link.get("up") else 0.0)
                for direction in ("forward", "reverse"):
                    d = link[direction]
                    values = [link_id, direction, *_ends(link_id, direction), shard]
                    for f, _, _ in COUNTERS:
                        counters[f].add_metric(values, float(d.get(f, 0)))
                    queued.add_metric(values, float(d.get("queued", 0)))
                    hist = d["lateness"]
                    buckets = [
                        ("+Inf" if le == "+Inf" else repr(float(le)), float(c))
                        for le, c in zip(hist["le_s"], hist["cumulative"], strict=True)
                    ]
                    late.add_metric(values, buckets, float(hist["sum_s"]))
                    late_max.add_metric(values, float(hist["max_s"]))
                    cfg = link.get("config", {}).get(direction, {})
                    delay.add_metric(values, float(cfg.get("delay_ms", 0.0)) / 1000.0)
                    loss.add_metric(values, float(cfg.get("loss_pct", 0.0)) / 100.0)
        yield shard_up
        yield uptime
        yield from counters.values()
        yield from (queued, late, late_max, delay, loss, link_up)


def serve(sockets: Sequence[str], host: str, port: int) -> tuple[Any, int]:
    """Start the HTTP server in a thread; returns (server, bound port)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WireCollector(sockets))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m toolkit.monitor.wire_exporter", description=__doc__.split("\n")[0])
    ap.add_argument("--socket", action="append", required=True, help="A wire control socket (repeat per shard).")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to serve /metrics on (port 0 = any free).")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if host in ("", "0.0.0.0", "::"):
        print("wire_exporter: bind a loopback or management address, not a wildcard", file=sys.stderr)
        return 2
    server, bound = serve(args.socket, host.strip("[]"), int(port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"ready {bound}", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
