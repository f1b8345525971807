"""CLI commands of the monitor: `cnlab monitor start|stop ID`, `cnlab metrics export ID`.

`register(app)` adds them to the root typer app (toolkit/cli/main.py calls it).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from .console import JsonOpt, err, out, print_json


def register(app: typer.Typer) -> None:
    monitor_app = typer.Typer(
        help="The Prometheus of a testbed: start, stop.", no_args_is_help=True, rich_markup_mode=None
    )
    metrics_app = typer.Typer(
        help="Metrics of a testbed's Prometheus: export.", no_args_is_help=True, rich_markup_mode=None
    )
    app.add_typer(monitor_app, name="monitor")
    app.add_typer(metrics_app, name="metrics")

    @monitor_app.command("start")
    def monitor_start(
        testbed_id: str = typer.Argument(..., metavar="ID", help="The testbed id."),
        scrape_interval_s: float | None = typer.Option(
            None,
            "--scrape-interval-s",
            min=0.1,
            help="Scrape and rule evaluation interval [default: 1 s up to 33 nodes, longer for more].",
        ),
        json_: bool = JsonOpt,
    ) -> None:
        """Start Prometheus for a testbed (its nodes and wire shards); print its URL."""
        from ..monitor import testbed_monitor

        mon = testbed_monitor.start(testbed_id, scrape_interval_s=scrape_interval_s)
        if json_:
            print_json({"url": mon.url, "pid": mon.pid, "tsdb": str(mon.tsdb), "targets": len(mon.targets())})
            return
        err.print(
            f"Prometheus for {testbed_id}: {len(mon.targets())} targets, TSDB {mon.tsdb}; "
            f"consoles at {mon.url}/consoles/federation.html"
        )
        print(mon.url)

    @monitor_app.command("stop")
    def monitor_stop(
        testbed_id: str = typer.Argument(..., metavar="ID", help="The testbed id."),
        keep_tsdb: Path | None = typer.Option(
            None,
            "--keep-tsdb",
            metavar="DIR",
            help="Move the TSDB to DIR (a new directory) instead of leaving it for `down` to remove.",
        ),
    ) -> None:
        """Stop a testbed's Prometheus (and the wire exporter)."""
        from ..monitor import testbed_monitor

        if not testbed_monitor.stop(testbed_id, keep_tsdb=keep_tsdb):
            err.print(f"testbed {testbed_id} had no Prometheus running")
            return
        err.print(f"stopped the Prometheus of {testbed_id}" + (f"; TSDB kept in {keep_tsdb}" if keep_tsdb else ""))

    @metrics_app.command("export")
    def metrics_export(
        testbed_id: str = typer.Argument(..., metavar="ID", help="The testbed id."),
        out_dir: Path = typer.Option(..., "--out", metavar="DIR", help="Directory to write CSV and JSON to."),
        since: str | None = typer.Option(
            None, help="Start: a duration before now (90s, 15m, 2h) or a unix time (default: when Prometheus started)."
        ),
        step_s: float | None = typer.Option(
            None, "--step-s", min=0.001, help="Resolution (default: the scrape interval)."
        ),
        json_: bool = JsonOpt,
    ) -> None:
        """Export the headline series of a testbed's Prometheus as CSV and JSON."""
        from ..monitor import testbed_monitor
        from ..monitor.export import export, parse_since

        mon = testbed_monitor.require(testbed_id)
        now = time.time()
        start = parse_since(since, now) if since else (mon.started_at or now - 3600)
        result = export(mon.url, out_dir, start, now, step_s=step_s)
        if json_:
            print_json(
                {
                    "out_dir": str(result.out_dir),
                    "files": [str(p) for p in result.files],
                    "points": result.points,
                    "empty": result.empty,
                    "step_s": result.step_s,
                }
            )
            return
        out.print(
            f"wrote {len(result.files)} files to {out_dir}: {result.points} points at "
            f"{result.step_s:g} s over {now - start:.0f} s"
            + (f"; no data for {', '.join(result.empty)}" if result.empty else "")
        )
