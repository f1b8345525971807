"""Prometheus metrics of one node, in a registry of its own (several nodes can share a process).

Base units throughout. Federation metrics are aggregated over peers (no per-peer labels), so the
series count stays linear in the number of nodes when a federation of hundreds is scraped.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.process_collector import ProcessCollector

# 1 ms .. 60 s
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# `_created` series double the series count for no use here
disable_created_metrics()


class NodeMetrics:
    def __init__(self, domain: str, with_process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if with_process:
            ProcessCollector(registry=r)  # process_resident_memory_bytes and friends
        self.info = Gauge("p2pvalue_node_info", "Static node information", ["domain", "version"], registry=r)
        self.request_duration = Histogram(
            "p2pvalue_http_request_duration_seconds",
            "Client API request duration by route",
            ["route", "method"],
            buckets=BUCKETS_S,
            registry=r,
        )
        self.updates_applied = Counter(
            "p2pvalue_updates_applied_total",
            "Document updates applied, by origin (local or remote)",
            ["origin"],
            registry=r,
        )
        self.update_bytes = Counter(
            "p2pvalue_update_bytes_total", "Bytes of document updates applied, by origin", ["origin"], registry=r
        )
        self.federation_sends = Counter(
            "p2pvalue_federation_sends_total", "Federation push requests sent (all peers)", registry=r
        )
        self.federation_send_failures = Counter(
            "p2pvalue_federation_send_failures_total", "Federation push requests that failed (all peers)", registry=r
        )
        self.federation_rejected = Counter(
            "p2pvalue_federation_requests_rejected_total",
            "Incoming federation requests rejected, by reason",
            ["reason"],
            registry=r,
        )
        self.outbox_depth = Gauge("p2pvalue_outbox_depth", "Entries waiting in the federation outbox", registry=r)
        self.outbox_oldest_age = Gauge(
            "p2pvalue_outbox_oldest_age_seconds", "Age of the oldest outbox entry (0 when empty)", registry=r
        )
        self.propagation_delay = Histogram(
            "p2pvalue_propagation_delay_seconds",
            "Delay from an update's origin timestamp to it being durable here (remote updates)",
            buckets=BUCKETS_S,
            registry=r,
        )
        self.antientropy_rounds = Counter(
            "p2pvalue_antientropy_rounds_total", "Anti-entropy rounds, by result", ["result"], registry=r
        )
        self.antientropy_repaired = Counter(
            "p2pvalue_antientropy_updates_repaired_total",
            "Missing updates received through anti-entropy that changed local state",
            registry=r,
        )
        self.peers_reachable = Gauge("p2pvalue_peers_reachable", "Trusted peers reachable at last contact", registry=r)
        self.peers_configured = Gauge("p2pvalue_peers_configured", "Trusted peers in the config", registry=r)
        self.objects = Gauge("p2pvalue_objects", "Collaborative objects stored on this node", registry=r)
        self.objects_loaded = Gauge("p2pvalue_objects_loaded", "Objects currently loaded in memory", registry=r)
        self.storage_commit_duration = Histogram(
            "p2pvalue_storage_commit_duration_seconds", "Duration of one group commit", buckets=BUCKETS_S, registry=r
        )
        self.storage_commit_jobs = Counter(
            "p2pvalue_storage_jobs_total", "Write jobs committed (several per commit under load)", registry=r
        )
        self.storage_commits = Counter("p2pvalue_storage_commits_total", "SQLite commits", registry=r)
        self.storage_failures = Counter(
            "p2pvalue_storage_failures_total",
            "Writes refused because the storage could not commit them (disk full, I/O error); answered 503",
            registry=r,
        )
        self.websocket_clients = Gauge("p2pvalue_websocket_clients", "Open client WebSockets", registry=r)
        self.websocket_dropped = Counter(
            "p2pvalue_websocket_dropped_total",
            "WebSocket clients closed (1008) because their queue passed limits.max_websocket_queue_bytes",
            registry=r,
        )
        self.connections_accepted = Counter(
            "p2pvalue_connections_accepted_total", "Connections accepted, by listener", ["listener"], registry=r
        )
        self.federation_received = Counter(
            "p2pvalue_federation_requests_received_total",
            "Verified federation requests received, by path",
            ["path"],
            registry=r,
        )
        self.connections_closed = Counter(
            "p2pvalue_connections_refused_total",
            "Connections closed by a listener, by listener and reason "
            "(cap: over max_*_connections; header_timeout: no request head within header_timeout_s)",
            ["listener", "reason"],
            registry=r,
        )
        from . import __version__

        self.info.labels(domain=domain, version=__version__).set(1)

    def connection_refused(self, listener: str) -> Any:
        def count(reason: str) -> None:
            self.connections_closed.labels(listener=listener, reason=reason).inc()

        return count

    def on_commit(self, jobs: int, seconds: float) -> None:
        # called from the writer thread; prometheus-client metrics are thread-safe
        self.storage_commits.inc()
        self.storage_commit_jobs.inc(jobs)
        self.storage_commit_duration.observe(seconds)
