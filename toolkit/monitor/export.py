"""Export a run's headline series from Prometheus as CSV and JSON.

    from toolkit.monitor.export import export
    result = export("http://127.0.0.1:9090", Path("run/metrics"), start, end)   # unix seconds
    result.files      # [Path, ...]: series.json, one <name>.csv per headline series, export.json

Range queries are made at `step_s` (default: the server's scrape interval, at least 1 s); a
range longer than 11,000 steps (Prometheus refuses more points per series) is fetched in chunks
of at most 11,000 points and joined, so the resolution is kept whatever the length of the run.

Files in out_dir:
- `<name>.csv`: `timestamp,value,<label columns...>` (one row per sample, series after series;
  timestamps in unix seconds, values as Prometheus prints them: "NaN" stays "NaN")
- `series.json`: {"start", "end", "step_s", "prometheus", "series": {name: {"expr", "unit",
  "series": [{"labels": {...}, "values": [[t, "v"], ...]}]}}}
- `export.json`: what was written and how (also the list of series that came back empty)
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .prometheus import api_get, min_range_s, widen_ranges

MAX_POINTS = 11_000  # Prometheus's limit of points per series in one range query


@dataclass(frozen=True)
class Headline:
    name: str
    expr: str
    unit: str


HEADLINES: tuple[Headline, ...] = (
    Headline("nodes_up", "cnlab:p2pvalue_nodes_up:sum", "count"),
    Headline("nodes_expected", "cnlab:p2pvalue_nodes:count", "count"),
    Headline("node_up", 'up{job="p2pvalue"}', "count"),
    Headline("updates_applied_per_s", "cnlab:p2pvalue_updates_applied:rate", "per_s"),
    Headline("node_updates_applied_per_s", "instance:p2pvalue_updates_applied:rate", "per_s"),
    Headline("propagation_p50_s", "cnlab:p2pvalue_propagation_delay_seconds:p50", "s"),
    Headline("propagation_p95_s", "cnlab:p2pvalue_propagation_delay_seconds:p95", "s"),
    Headline("propagation_p99_s", "cnlab:p2pvalue_propagation_delay_seconds:p99", "s"),
    Headline("outbox_depth_sum", "cnlab:p2pvalue_outbox_depth:sum", "count"),
    Headline("outbox_depth_max", "cnlab:p2pvalue_outbox_depth:max", "count"),
    Headline("outbox_oldest_age_s", "cnlab:p2pvalue_outbox_oldest_age_seconds:max", "s"),
    Headline("peers_reachable_ratio", "cnlab:p2pvalue_peers_reachable:ratio", "ratio"),
    Headline("node_memory_bytes", 'process_resident_memory_bytes{job="p2pvalue"}', "bytes"),
    # one process per node only: dense hosts serve no process_* metrics
    Headline("node_cpu_s_per_s", 'sum(rate(process_cpu_seconds_total{job="p2pvalue"}[15s]))', "s_per_s"),
    Headline("wire_lateness_p99_s", "shard:cnlab_wire_release_lateness_seconds:p99", "s"),
    Headline("wire_frames_in_per_s", "sum by (shard) (rate(cnlab_wire_frames_received_total[15s]))", "per_s"),
    Headline("wire_frames_lost_per_s", "sum by (shard) (rate(cnlab_wire_frames_lost_total[15s]))", "per_s"),
    Headline("wire_dropped_by_wire_per_s", "cnlab:cnlab_wire_frames_dropped_by_wire:rate", "per_s"),
    Headline("alerts_firing", 'ALERTS{alertstate="firing"}', "count"),
)


@dataclass
class ExportResult:
    out_dir: Path
    start: float
    end: float
    step_s: float
    files: list[Path] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # headline series with no data in the range
    points: int = 0


def chunks(start: float, end: float, step_s: float, max_points: int = MAX_POINTS) -> list[tuple[float, float]]:
    """Split [start, end] into ranges of at most max_points steps each (inclusive ends, no overlap)."""
    if end < start:
        raise InputError(f"export range: end {end} is before start {start}")
    if step_s < 0.001:
        raise InputError(f"export step {step_s} s: Prometheus steps are whole milliseconds, at least 0.001 s")
    span = (max_points - 1) * step_s
    out = []
    t = start
    while True:
        stop = min(end, t + span)
        out.append((t, stop))
        if stop >= end:
            return out
        t = stop + step_s


def query_range(url: str, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
    """A range query of any length: chunked below 11,000 points; series joined by their labels."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for a, b in chunks(start, end, step_s):
        data = api_get(url, "query_range", query=expr, start=f"{a:.3f}", end=f"{b:.3f}", step=f"{step_s:g}")
        for s in data["result"]:
            key = tuple(sorted(s["metric"].items()))
            merged.setdefault(key, {"labels": s["metric"], "values": []})["values"] += s["values"]
    return [merged[k] for k in sorted(merged)]


def scrape_interval_s(url: str) -> float:
    """The server's global scrape interval (from its running config)."""
    import yaml

    cfg = yaml.safe_load(api_get(url, "status/config")["yaml"])
    text = str(cfg.get("global", {}).get("scrape_interval", "1s"))
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "").isdigit():
            return float(text[: -len(suffix)]) * units[suffix]
    return 1.0


def export(
    prometheus_url: str,
    out_dir: Path,
    start: float,
    end: float,
    *,
    step_s: float | None = None,
    headlines: tuple[Headline, ...] = HEADLINES,
) -> ExportResult:
    """Write the headline series between start and end (unix seconds) to out_dir as CSV and JSON.

    step_s defaults to the server's scrape interval (at least 1 s). Raises RunError when
    Prometheus cannot be reached or refuses a query, InputError for a bad range."""
    scrape_s = scrape_interval_s(prometheus_url)
    step = step_s if step_s is not None else max(1.0, scrape_s)
    range_s = min_range_s(scrape_s)  # a rate needs two samples in its range at any interval
    chunks(start, end, step)  # checks the range before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out_dir, start, end, step)
    doc: dict[str, Any] = {"prometheus": prometheus_url, "start": start, "end": end, "step_s": step, "series": {}}
    exprs = {h.name: widen_ranges(h.expr, range_s) for h in headlines}
    for h in headlines:
        series = query_range(prometheus_url, exprs[h.name], start, end, step)
        doc["series"][h.name] = {"expr": exprs[h.name], "unit": h.unit, "series": series}
        if not series:
            result.empty.append(h.name)
        path = out_dir / f"{h.name}.csv"
        label_names = sorted({k for s in series for k in s["labels"]})
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "value", *label_names])
            for s in series:
                labels = [s["labels"].get(k, "") for k in label_names]
                for t, v in s["values"]:
                    w.writerow([_ts(t), v, *labels])
                    result.points += 1
        result.files.append(path)
    series_path = out_dir / "series.json"
    series_path.write_text(json.dumps(doc) + "\n")
    result.files.append(series_path)
    summary = out_dir / "export.json"
    summary.write_text(
        json.dumps(
            {
                "prometheus": prometheus_url,
                "start": start,
                "end": end,
                "step_s": step,
                "points": result.points,
                "files": [p.name for p in result.files],
                "empty": result.empty,
                "headlines": {h.name: {"expr": exprs[h.name], "unit": h.unit} for h in headlines},
            },
            indent=1,
        )
        + "\n"
    )
    result.files.append(summary)
    return result


def _ts(t: float) -> str:
    return f"{t:.3f}".rstrip("0").rstrip(".") if not math.isnan(t) else "NaN"


def parse_since(text: str, now: float) -> float:
    """'90s', '15m', '2h', '1d' before now, or an absolute unix time."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip()
    if t and t[-1] in units and t[:-1].replace(".", "", 1).isdigit():
        return now - float(t[:-1]) * units[t[-1]]
    try:
        return float(t)
    except ValueError:
        raise InputError(f"--since {text!r}: use a duration like 90s, 15m, 2h, 1d or a unix time") from None
