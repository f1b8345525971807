"""Monitoring: a real Prometheus per testbed (or run), the wire's fidelity as metrics, exports.

Public API (see docs/monitoring.md):
- `prometheus.Prometheus.start(dir, targets, testbed=...)`, `.set_targets()`, `.stop(keep_tsdb=)`,
  `prometheus.ScrapeTarget(job, address, labels)`
- `testbed_monitor.start(testbed_id)`, `.stop(testbed_id)`, `.url(testbed_id)`,
  `.update_targets(testbed_id, job, targets)`, `.targets_of_nodes(nodes)`
- `export.export(prometheus_url, out_dir, start, end)`
"""
