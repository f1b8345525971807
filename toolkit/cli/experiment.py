"""CLI commands of experiments: `cnlab run`, `cnlab report`, `cnlab runs`.

`register(app)` adds them to the root typer app (toolkit/cli/main.py calls it). The runner reports
progress through a callback; the rich display lives only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..errors import InputError
from .console import JsonOpt, err, out, print_json


class _Display:
    """Phases and timeline events as lines, the workload as a live progress bar (stderr)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.task: Any = None
        self.last_step: Any = None

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "run_dir":
            err.print(f"run directory: {info['path']}")
        elif event == "phase":
            detail = ", ".join(f"{k} {v}" for k, v in info.items() if k != "phase")
            self._stop()
            err.print(f"[bold]== {info['phase']}[/]" + (f"  ({detail})" if detail else ""))
            if info["phase"] == "workload":
                self.bar.start()
                self.task = self.bar.add_task("workload", total=info.get("actions", 0))
        elif event == "step":
            key = (info["phase"], info["what"], info["done"] == info.get("total"))
            if key != self.last_step:
                self.last_step = key
                err.print(f"   {info['phase']}: {info['what']} {info['done']}/{info['total']}")
        elif event == "setup":
            err.print(f"   set-up: {info.get('step')}")
        elif event == "workload" and self.task is not None:
            self.bar.update(
                self.task, completed=info["started"], description=f"workload ({info['in_flight']} in flight)"
            )
        elif event == "event":
            self.bar.console.print(f"   [yellow]t={info['planned_t']:.1f}s[/] {info['describe']}")
        elif event == "event_done" and not info.get("ok"):
            self.bar.console.print(f"   [red]event {info['name']} failed:[/] {info.get('error')}")

    def _stop(self) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=self.bar.tasks[0].total)
            self.bar.stop()
            self.task = None


def _print_result(result: Any) -> None:
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("check", "verdict", "observed", "wanted"):
        table.add_column(col)
    colors = {"pass": "green", "fail": "red", "unknown": "yellow"}
    for v in result.verdicts:
        observed = "no data" if v.observed is None else f"{v.observed:.4g}"
        table.add_row(v.name, f"[{colors[v.verdict]}]{v.verdict}[/]", observed, f"{v.op} {v.value:g}")
    out.print(table)
    s = result.summary
    out.print(
        f"acknowledged {s.get('acknowledged_updates')}, present everywhere {s.get('present_everywhere')}, "
        f"lost {s.get('lost_updates')}, diverged {s.get('diverged_updates')}; "
        f"availability {s.get('availability')}"
    )
    if s.get("error"):
        err.print(f"[red]error:[/] {s['error']}")
    color = {"pass": "green", "fail": "red"}.get(result.verdict, "yellow")
    out.print(f"verdict: [{color}]{result.verdict}[/]   report: {result.dir / 'report.html'}")


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        experiment: Path = typer.Argument(..., help="An experiment YAML file."),
        keep: bool = typer.Option(False, "--keep", help="Leave the testbed, nodes and Prometheus up afterwards."),
        seed: int | None = typer.Option(None, "--seed", help="Override the experiment's seed."),
        junit: Path | None = typer.Option(None, "--junit", help="Also write the JUnit XML here."),
        runs_dir: Path | None = typer.Option(
            None, "--runs-dir", help="Where run directories go (default: runs/, or $CNLAB_RUNS_DIR)."
        ),
        testbed_id: str | None = typer.Option(None, "--id", help="Testbed id (default: random)."),
    ) -> None:
        """Run an experiment: up, deploy, monitor, workload and faults, checks, report, down.
        Exit 1 when a check fails (or the run is incomplete), 2 for bad input."""
        from ..experiment.loader import load_experiment
        from ..experiment.platforms import platform_for
        from ..experiment.runner import RunOptions, run_experiment
        from ..testbed.testbed import check_privileges

        if seed is not None and seed < 0:
            raise InputError("--seed must be 0 or more")
        exp = load_experiment(experiment)
        if platform_for(exp.topology).needs_root:  # real devices (kind: ssh) are only reached over SSH
            check_privileges()
        result = run_experiment(
            exp, RunOptions(keep=keep, seed=seed, junit=junit, runs_root=runs_dir, testbed_id=testbed_id), _Display()
        )
        _print_result(result)
        if result.testbed_id and keep:
            out.print(f"testbed {result.testbed_id} left up (--keep): `cnlab down {result.testbed_id}` removes it")
        if result.verdict != "pass":
            raise typer.Exit(1)

    @app.command("report")
    def report_cmd(run: Path = typer.Argument(..., help="A run directory (runs/<time>-<name>).")) -> None:
        """Render a run's report.html again from its run directory."""
        from ..experiment.report import write_report

        if not (run / "summary.json").exists():
            raise InputError(f"{run}: not a run directory (no summary.json)")
        out.print(f"wrote {write_report(run)}")

    @app.command("runs")
    def runs_cmd(
        runs_dir: Path | None = typer.Option(None, "--runs-dir", help="Where run directories are (default: runs/)."),
        json_: bool = JsonOpt,
    ) -> None:
        """List past runs with their verdicts."""
        from ..experiment.rundir import list_runs

        runs = list_runs(runs_dir)
        if json_:
            print_json(runs)
            return
        table = Table(show_header=True, header_style="bold", box=None)
        for col in ("run", "verdict", "checks failed", "wall s"):
            table.add_column(col)
        for r in runs:
            table.add_row(
                r["run"],
                str(r.get("verdict")),
                f"{r.get('failed')}/{r.get('checks')}" if r.get("checks") is not None else "",
                str(r.get("duration_s") or ""),
            )
        out.print(table if runs else "no runs yet")
