"""The panels of cnlab's live views, defined once: Prometheus console templates and Grafana
dashboards are both generated from `BOARDS`.

    python -m toolkit.monitor.panels --write     # rewrites monitoring/consoles/*.html and
                                                 # monitoring/dashboards/*.json (a test checks they are current)

Expressions use double-quoted PromQL strings; two placeholders stand for the row of a table:
`$SEL` (label matchers selecting one row, or the board's job in Grafana) and `$BY` (the row's
key labels, for aggregations that must keep them).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .prometheus import MONITORING_DIR

UNITS = {  # unit -> (console JS formatter, console Go template, console suffix, Grafana unit, axis title)
    "s": ("humanize", "humanize", "s", "s", "seconds"),
    "per_s": ("humanizeNoSmallPrefix", "humanizeNoSmallPrefix", "/s", "ops", "per second"),
    "ratio": ("humanizeNoSmallPrefix", "humanizePercentage", "", "percentunit", "share"),
    "count": ("humanizeNoSmallPrefix", "humanizeNoSmallPrefix", "", "short", "count"),
    "bytes": ("humanize1024", "humanize1024", "B", "bytes", "bytes"),
}


@dataclass(frozen=True)
class Series:
    expr: str
    legend: tuple[str, ...] = ()  # label names shown in the legend (empty: the title)
    name: str = ""  # fixed legend text instead of labels


@dataclass(frozen=True)
class Graph:
    id: str
    title: str
    unit: str
    series: tuple[Series, ...]


@dataclass(frozen=True)
class Stat:
    title: str
    expr: str
    unit: str


@dataclass(frozen=True)
class Column:
    title: str
    expr: str  # with $SEL (and $BY where it aggregates)
    unit: str


@dataclass(frozen=True)
class Table:
    title: str
    rows: str  # instant query whose results are the rows
    key: tuple[str, ...]  # labels identifying a row (shown as the first columns)
    job: str  # what $SEL becomes in Grafana
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Board:
    slug: str
    title: str
    intro: str
    stats: tuple[Stat, ...]
    graphs: tuple[Graph, ...]
    tables: tuple[Table, ...] = field(default=())


def _s(expr: str, *legend: str, name: str = "") -> Series:
    return Series(expr, tuple(legend), name)


FEDERATION = Board(
    "federation",
    "Federation overview",
    "Nodes up, updates applied, propagation delay and the outbox over all P2Pvalue nodes of this testbed.",
    stats=(
        Stat("Nodes up", "cnlab:p2pvalue_nodes_up:sum", "count"),
        Stat("Nodes expected", "cnlab:p2pvalue_nodes:count", "count"),
        Stat("Local updates", 'sum(cnlab:p2pvalue_updates_applied:rate{origin="local"})', "per_s"),
        Stat("Remote updates", 'sum(cnlab:p2pvalue_updates_applied:rate{origin="remote"})', "per_s"),
        Stat("Propagation p50", "cnlab:p2pvalue_propagation_delay_seconds:p50", "s"),
        Stat("Propagation p99", "cnlab:p2pvalue_propagation_delay_seconds:p99", "s"),
        Stat("Outbox entries", "cnlab:p2pvalue_outbox_depth:sum", "count"),
        Stat("Oldest outbox entry", "cnlab:p2pvalue_outbox_oldest_age_seconds:max", "s"),
        Stat("Peers reachable", "cnlab:p2pvalue_peers_reachable:ratio", "ratio"),
        Stat("Alerts firing", 'count(ALERTS{alertstate="firing"}) or vector(0)', "count"),
    ),
    graphs=(
        Graph(
            "nodes_up",
            "Nodes up",
            "count",
            (_s("cnlab:p2pvalue_nodes_up:sum", name="up"), _s("cnlab:p2pvalue_nodes:count", name="expected")),
        ),
        Graph("updates", "Updates applied per second", "per_s", (_s("cnlab:p2pvalue_updates_applied:rate", "origin"),)),
        Graph(
            "propagation",
            "Propagation delay (remote updates, whole federation)",
            "s",
            (
                _s("cnlab:p2pvalue_propagation_delay_seconds:p50", name="p50"),
                _s("cnlab:p2pvalue_propagation_delay_seconds:p95", name="p95"),
                _s("cnlab:p2pvalue_propagation_delay_seconds:p99", name="p99"),
            ),
        ),
        Graph(
            "outbox",
            "Outbox entries (all nodes, deepest node)",
            "count",
            (
                _s("cnlab:p2pvalue_outbox_depth:sum", name="all nodes"),
                _s("cnlab:p2pvalue_outbox_depth:max", name="deepest node"),
            ),
        ),
        Graph(
            "outbox_age",
            "Oldest outbox entry",
            "s",
            (_s("cnlab:p2pvalue_outbox_oldest_age_seconds:max", name="oldest"),),
        ),
        Graph(
            "reachable",
            "Peers reachable (share of configured)",
            "ratio",
            (
                _s("cnlab:p2pvalue_peers_reachable:ratio", name="all nodes"),
                _s("cnlab:p2pvalue_peers_reachable:min_ratio", name="worst node"),
            ),
        ),
    ),
)

NODES = Board(
    "nodes",
    "Nodes",
    "One row per P2Pvalue node: scrape health, update rates, outbox, reachability, memory.",
    stats=(
        Stat("Nodes up", "cnlab:p2pvalue_nodes_up:sum", "count"),
        Stat("Nodes expected", "cnlab:p2pvalue_nodes:count", "count"),
        Stat("Memory (all nodes)", 'sum(process_resident_memory_bytes{job="p2pvalue"})', "bytes"),
    ),
    graphs=(
        Graph(
            "node_updates",
            "Updates applied per second, per node",
            "per_s",
            (_s("sum by (instance, device) (instance:p2pvalue_updates_applied:rate)", "device", "instance"),),
        ),
        Graph(
            "node_outbox",
            "Outbox entries per node",
            "count",
            (_s('p2pvalue_outbox_depth{job="p2pvalue"}', "device", "instance"),),
        ),
        Graph(
            "node_memory",
            "Resident memory per node",
            "bytes",
            (_s('process_resident_memory_bytes{job="p2pvalue"}', "device", "instance"),),
        ),
    ),
    tables=(
        Table(
            "Nodes",
            'up{job="p2pvalue"}',
            ("device", "instance"),
            'job="p2pvalue"',
            (
                Column("up", "up{$SEL}", "count"),
                Column(
                    "local/s", 'sum by ($BY) (rate(p2pvalue_updates_applied_total{$SEL,origin="local"}[15s]))', "per_s"
                ),
                Column(
                    "remote/s",
                    'sum by ($BY) (rate(p2pvalue_updates_applied_total{$SEL,origin="remote"}[15s]))',
                    "per_s",
                ),
                Column(
                    "propagation p99",
                    "histogram_quantile(0.99, sum by ($BY, le) (rate(p2pvalue_propagation_delay_seconds_bucket{$SEL}[15s])))",
                    "s",
                ),
                Column("outbox", "p2pvalue_outbox_depth{$SEL}", "count"),
                Column("outbox age", "p2pvalue_outbox_oldest_age_seconds{$SEL}", "s"),
                Column("peers reachable", "p2pvalue_peers_reachable{$SEL}", "count"),
                Column("peers configured", "p2pvalue_peers_configured{$SEL}", "count"),
                Column("memory", "process_resident_memory_bytes{$SEL}", "bytes"),
            ),
        ),
    ),
)

LINKS = Board(
    "links",
    "Links (the wire)",
    "The link emulator's fidelity: frames per link and direction, emulated loss, drops by the wire "
    "itself, and how late frames were released (the fidelity bound is 2 ms at p99).",
    stats=(
        Stat("Wire shards up", "sum(cnlab_wire_shard_up)", "count"),
        Stat("Frames in", "sum(rate(cnlab_wire_frames_received_total[15s]))", "per_s"),
        Stat("Lost (emulated)", "sum(rate(cnlab_wire_frames_lost_total[15s]))", "per_s"),
        Stat("Dropped by the wire", "cnlab:cnlab_wire_frames_dropped_by_wire:rate", "per_s"),
        Stat("Lateness p99 (worst shard)", "max(shard:cnlab_wire_release_lateness_seconds:p99)", "s"),
        Stat("Lateness max", "max(cnlab_wire_release_lateness_max_seconds)", "s"),
    ),
    graphs=(
        Graph(
            "lateness",
            "Release lateness p99 per shard",
            "s",
            (_s("shard:cnlab_wire_release_lateness_seconds:p99", "shard"),),
        ),
        Graph(
            "frames",
            "Frames in per second (10 busiest link directions)",
            "per_s",
            (_s("topk(10, link:cnlab_wire_frames_received:rate)", "link", "direction"),),
        ),
        Graph(
            "loss",
            "Emulated loss ratio (10 lossiest link directions)",
            "ratio",
            (_s("topk(10, link:cnlab_wire_frames_lost:ratio)", "link", "direction"),),
        ),
        Graph(
            "wire_drops",
            "Frames dropped by the wire itself",
            "per_s",
            (_s("cnlab:cnlab_wire_frames_dropped_by_wire:rate", name="ring drops + send errors"),),
        ),
    ),
    tables=(
        Table(
            "Busiest 20 link directions",
            "topk(20, link:cnlab_wire_frames_received:rate)",
            ("link", "direction"),
            'job="wire"',
            (
                Column("in/s", "sum by ($BY) (rate(cnlab_wire_frames_received_total{$SEL}[15s]))", "per_s"),
                Column("forwarded/s", "sum by ($BY) (rate(cnlab_wire_frames_forwarded_total{$SEL}[15s]))", "per_s"),
                Column("lost/s", "sum by ($BY) (rate(cnlab_wire_frames_lost_total{$SEL}[15s]))", "per_s"),
                Column(
                    "queue drops/s", "sum by ($BY) (rate(cnlab_wire_frames_queue_dropped_total{$SEL}[15s]))", "per_s"
                ),
                Column("down drops/s", "sum by ($BY) (rate(cnlab_wire_frames_down_dropped_total{$SEL}[15s]))", "per_s"),
                Column(
                    "lateness p99",
                    "histogram_quantile(0.99, sum by ($BY, le) (rate(cnlab_wire_release_lateness_seconds_bucket{$SEL}[15s])))",
                    "s",
                ),
                Column("lateness max", "max by ($BY) (cnlab_wire_release_lateness_max_seconds{$SEL})", "s"),
                Column("delay set", "max by ($BY) (cnlab_wire_configured_delay_seconds{$SEL})", "s"),
            ),
        ),
    ),
)

BOARDS: tuple[Board, ...] = (FEDERATION, NODES, LINKS)


def all_exprs(board: Board) -> list[str]:
    """Every PromQL expression of a board as Grafana would send it (for validation)."""
    out = [s.expr for s in board.stats]
    out += [se.expr for g in board.graphs for se in g.series]
    for t in board.tables:
        out.append(t.rows)
        out += [_grafana_expr(c.expr, t) for c in t.columns]
    return out


# ---- console templates ---------------------------------------------------------------------------
def _console_q(expr: str) -> str:
    """PromQL for a console: single-quoted strings (they sit inside Go and JS double quotes)."""
    return expr.replace('"', "'")


def _legend_console(s: Series) -> str:
    if s.name:
        return s.name
    return " ".join(f"[[{label}]]" for label in s.legend) or "[[__name__]]"


def render_console(board: Board) -> str:
    lines = [
        '{{ template "head" . }}',
        "",
        '{{ template "prom_right_table_head" }}',
        f'<tr><th colspan="2">{board.title}</th></tr>',
    ]
    for st in board.stats:
        _js, gofmt, suffix, _, _ = UNITS[st.unit]
        lines.append(
            f'<tr><td>{st.title}</td><td>{{{{ template "prom_query_drilldown" '
            f'(args "{_console_q(st.expr)}" "{suffix}" "{gofmt}") }}}}</td></tr>'
        )
    lines += [
        '{{ template "prom_right_table_tail" }}',
        "",
        '{{ template "prom_content_head" . }}',
        '<div class="prom_content_div">',
        f"<h1>{board.title}</h1>",
        f'<p class="cnlab_intro">{board.intro}</p>',
    ]
    for g in board.graphs:
        jsfmt, _, suffix, _, axis = UNITS[g.unit]
        exprs = ", ".join(json.dumps(_console_q(s.expr)) for s in g.series)
        names = ", ".join(json.dumps(_legend_console(s)) for s in g.series)
        lines += [
            f"<h3>{g.title}</h3>",
            f'<div id="graph_{g.id}" class="cnlab_graph"></div>',
            "<script>",
            "new PromConsole.Graph({",
            f'  node: document.querySelector("#graph_{g.id}"),',
            f"  expr: [{exprs}],",
            f"  name: [{names}],",
            f"  yAxisFormatter: PromConsole.NumberFormatter.{jsfmt},",
            f"  yHoverFormatter: PromConsole.NumberFormatter.{jsfmt},",
            f'  yUnits: "{suffix}", yTitle: "{axis}", min: 0,',
            "})",
            "</script>",
        ]
    for t in board.tables:
        lines += [f"<h3>{t.title}</h3>", '<table class="table table-sm table-striped cnlab_table">', "<tr>"]
        lines += [f"<th>{k}</th>" for k in t.key] + [f"<th>{c.title}</th>" for c in t.columns] + ["</tr>"]
        sel = ",".join(f"{k}='%s'" for k in t.key)
        by = ", ".join(t.key)
        keyargs = " ".join(f".Labels.{k}" for k in t.key)
        lines.append(f'{{{{ range query "{_console_q(t.rows)}" | sortByLabel "{t.key[0]}" }}}}<tr>')
        lines += [f"<td>{{{{ .Labels.{k} }}}}</td>" for k in t.key]
        for c in t.columns:
            _js, gofmt, suffix, _, _ = UNITS[c.unit]
            expr = _console_q(c.expr.replace("%", "%%")).replace("$SEL", sel).replace("$BY", by)
            lines.append(
                f'<td>{{{{ template "prom_query_drilldown" (args (printf "{expr}" {keyargs}) '
                f'"{suffix}" "{gofmt}") }}}}</td>'
            )
        lines += ["</tr>{{ end }}", "</table>"]
    lines += ["</div>", '{{ template "prom_content_tail" . }}', "", '{{ template "tail" }}', ""]
    return "\n".join(lines)


# ---- Grafana ---------------------------------------------------------------------------------------
def _grafana_expr(expr: str, table: Table) -> str:
    return expr.replace("$SEL", table.job).replace("$BY", ", ".join(table.key))


def _legend_grafana(s: Series) -> str:
    if s.name:
        return s.name
    return " ".join("{{" + label + "}}" for label in s.legend)


DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def render_grafana(board: Board) -> dict[str, Any]:
    """A Grafana dashboard (schemaVersion 39) importable with a Prometheus data source input."""
    panels: list[dict[str, Any]] = []
    pid = 0
    y = 0

    def next_id() -> int:
        nonlocal pid
        pid += 1
        return pid

    for i, st in enumerate(board.stats):
        panels.append(
            {
                "id": next_id(),
                "type": "stat",
                "title": st.title,
                "datasource": DS,
                "gridPos": {"h": 4, "w": 4, "x": (i % 6) * 4, "y": y + (i // 6) * 4},
                "fieldConfig": {"defaults": {"unit": UNITS[st.unit][3]}, "overrides": []},
                "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
                "targets": [{"refId": "A", "datasource": DS, "expr": st.expr, "instant": True}],
            }
        )
    y += 4 * (-(-len(board.stats) // 6))
    for i, g in enumerate(board.graphs):
        panels.append(
            {
                "id": next_id(),
                "type": "timeseries",
                "title": g.title,
                "datasource": DS,
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": y + (i // 2) * 8},
                "fieldConfig": {"defaults": {"unit": UNITS[g.unit][3], "min": 0}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
                "targets": [
                    {
                        "refId": chr(ord("A") + k),
                        "datasource": DS,
                        "expr": s.expr,
                        "legendFormat": _legend_grafana(s) or g.title,
                    }
                    for k, s in enumerate(g.series)
                ],
            }
        )
    y += 8 * (-(-len(board.graphs) // 2))
    for t in board.tables:
        panels.append(
            {
                "id": next_id(),
                "type": "table",
                "title": t.title,
                "datasource": DS,
                "gridPos": {"h": 10, "w": 24, "x": 0, "y": y},
                "fieldConfig": {
                    "defaults": {},
                    "overrides": [
                        {
                            "matcher": {"id": "byName", "options": f"Value #{chr(ord('A') + k)}"},
                            "properties": [
                                {"id": "displayName", "value": c.title},
                                {"id": "unit", "value": UNITS[c.unit][3]},
                            ],
                        }
                        for k, c in enumerate(t.columns)
                    ],
                },
                "targets": [
                    {
                        "refId": chr(ord("A") + k),
                        "datasource": DS,
                        "expr": _grafana_expr(c.expr, t),
                        "instant": True,
                        "format": "table",
                    }
                    for k, c in enumerate(t.columns)
                ],
                "transformations": [
                    {"id": "merge", "options": {}},
                    {
                        "id": "organize",
                        "options": {"excludeByName": {"Time": True}, "indexByName": {}, "renameByName": {}},
                    },
                ],
            }
        )
        y += 10
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [{"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "uid": f"cnlab-{board.slug}",
        "title": f"cnlab: {board.title}",
        "description": board.intro,
        "tags": ["cnlab"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "links": [
            {
                "type": "dashboards",
                "tags": ["cnlab"],
                "asDropdown": False,
                "title": "cnlab",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


# ---- files ---------------------------------------------------------------------------------------
def generated_files(monitoring_dir: Path = MONITORING_DIR) -> dict[Path, str]:
    files = {}
    for b in BOARDS:
        files[monitoring_dir / "consoles" / f"{b.slug}.html"] = render_console(b)
        files[monitoring_dir / "dashboards" / f"cnlab-{b.slug}.json"] = json.dumps(render_grafana(b), indent=1) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m toolkit.monitor.panels", description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="Write the generated files (default: check them).")
    args = ap.parse_args(argv)
    stale = []
    for path, text in generated_files().items():
        current = path.read_text() if path.exists() else None
        if current != text:
            if args.write:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"wrote {path}")
            else:
                stale.append(str(path))
    if stale:
        print("out of date (run python -m toolkit.monitor.panels --write): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
