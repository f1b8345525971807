"""CLI commands of emulated testbeds: up, down, status, exec, link set/down/up, partition, heal.

`register(app)` adds them to the root typer app (toolkit/cli/main.py calls it).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from ..errors import InputError
from ..topology.loader import load_any
from .console import JsonOpt, err, out, print_json

if TYPE_CHECKING:
    from ..testbed.testbed import Testbed


def _progress() -> tuple[Callable[[str, int, int], None], Callable[[], None]]:
    """A rich progress bar on stderr, as an executor progress callback (and a closer)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:<32}"), BarColumn(), TimeElapsedColumn(), console=err, transient=True)
    task = bar.add_task("planning", total=1)
    bar.start()

    def update(title: str, done: int, total: int) -> None:
        bar.update(task, description=title, completed=done, total=total)

    return update, bar.stop


def register(app: typer.Typer) -> None:
    link_app = typer.Typer(help="Change a link of a live testbed.", no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(link_app, name="link")

    @app.command()
    def up(
        topology: Path = typer.Argument(..., help="A topology YAML file (or a NetJSON graph)."),
        testbed_id: str | None = typer.Option(
            None, "--id", help="Testbed id: 1-5 of [a-z0-9], starting with a letter (default: random)."
        ),
        shaper: str | None = typer.Option(
            None, help="netem | wire | none (default: netem if the kernel has it, else wire; see `cnlab doctor`)."
        ),
        routing: str | None = typer.Option(
            None, help="static (shortest paths by delay) | babeld (default: the topology's routing, else static)."
        ),
        ipv6: bool = typer.Option(True, "--ipv6/--no-ipv6", help="Also fd00::/8 addresses and routes."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and create nothing."),
        deploy: bool = typer.Option(False, "--deploy", help="Then deploy the topology's federation (`cnlab deploy`)."),
        monitor: bool = typer.Option(
            True,
            "--monitor/--no-monitor",
            help="With --deploy: start the testbed's Prometheus (`cnlab monitor start`).",
        ),
        nodes_per_process: int | None = typer.Option(
            None, "--nodes-per-process", min=1, help="With --deploy: dense mode, N nodes per process."
        ),
        json_: bool = JsonOpt,
    ) -> None:
        """Bring a topology up on this machine as network namespaces; print the testbed id. A
        topology of real devices (every device `kind: ssh`) becomes a remote testbed: state only,
        each device's host key checked and its nft/tc/netem probed over SSH."""
        from ..testbed.testbed import Testbed

        if routing not in (None, "static", "babeld"):
            raise InputError(f"unknown routing {routing!r}: use static or babeld")
        topo = load_any(topology)
        routing = routing or topo.routing
        if dry_run:
            plan = Testbed.make_plan(
                topo,
                testbed_id,
                shaper=shaper,
                routing=routing,  # type: ignore[arg-type]
                ipv6=ipv6,
            )
            if json_:
                sys.stdout.write(plan.to_json() + "\n")
                return
            out.print(plan.summary())
            for phase in plan.phases():
                out.print(f"# {phase.title}")
                for step in phase.steps:
                    where = f" in {step.netns}" if step.netns else ""
                    tool = {
                        "ip": "ip -batch",
                        "tc": "tc -batch",
                        "sh": "sh",
                        "files": "write",
                        "nsops": "in-process",
                        "wire": "start wire",
                        "converge": "wait for routes",
                    }[step.kind]
                    out.print(f"## {tool}{where}")
                    for path in step.files:
                        out.print(f"  write {path}")
                    for line in step.lines:
                        out.print("  " + line.replace("\n", "\n  "), markup=False)
            return
        update, stop = _progress() if sys.stderr.isatty() else (None, lambda: None)
        t0 = time.monotonic()
        try:
            tb = Testbed.up(
                topo,
                testbed_id,
                shaper=shaper,
                routing=routing,  # type: ignore[arg-type]
                ipv6=ipv6,
                progress=update,
            )
        finally:
            stop()
        if not json_:
            err.print(
                f"testbed {tb.id} up: {len(tb.plan.devices)} devices, {len(tb.plan.links)} "
                f"links, shaper {tb.plan.shaper}, routing {tb.plan.routing}, "
                f"{time.monotonic() - t0:.1f} s"
            )
        from ..deploy.direct import remember_federation

        remember_federation(tb, topo)
        if deploy:
            from .deploy import run_deploy

            run_deploy(tb, topology=topo, nodes_per_process=nodes_per_process)
            if monitor:
                from ..monitor import testbed_monitor

                mon = testbed_monitor.start(tb.id)
                err.print(f"Prometheus: {mon.url}/consoles/federation.html")
        if json_:
            print_json(tb.status())
        else:
            print(tb.id)

    @app.command()
    def down(
        testbed_id: str = typer.Argument(..., metavar="ID", help="The testbed id."),
        keep_tsdb: Path | None = typer.Option(
            None, "--keep-tsdb", metavar="DIR", help="Keep the Prometheus TSDB: move it to DIR first."
        ),
    ) -> None:
        """Remove a testbed: exactly the resources its journal lists (also after a crashed `up`)."""
        from ..testbed.testbed import Testbed

        t0 = time.monotonic()
        if keep_tsdb is not None:
            from ..monitor import testbed_monitor

            testbed_monitor.stop(testbed_id, keep_tsdb=keep_tsdb)
        from .ansible import remove_remote_nodes

        remove_remote_nodes(testbed_id)  # remote testbeds: nodes on real devices go first (cleanup role)
        warnings = Testbed.down_id(testbed_id)
        for w in warnings:
            err.print(f"[yellow]warning:[/] {w}")
        err.print(f"testbed {testbed_id} removed in {time.monotonic() - t0:.1f} s")

    @app.command()
    def status(
        testbed_id: str | None = typer.Argument(None, metavar="[ID]", help="One testbed (default: all)."),
        links: bool = typer.Option(False, "--links", help="Per-link, per-direction counters and lateness."),
        json_: bool = JsonOpt,
    ) -> None:
        """List live testbeds and their state; with an ID, one testbed (and --links its links)."""
        from ..testbed.testbed import Testbed

        if testbed_id is None:
            rows = Testbed.live()
            if json_:
                print_json(rows)
                return
            if not rows:
                out.print("no testbeds")
                return
            table = Table(box=None, header_style="bold")
            for col in ("id", "phase", "topology", "devices", "links", "shaper", "routing", "up s"):
                table.add_column(col)
            for r in rows:
                table.add_row(
                    r["id"],
                    r["phase"],
                    str(r["topology"]),
                    str(r["devices"]),
                    str(r["links"]),
                    str(r["shaper"]),
                    str(r["routing"]),
                    str(r["up_s"] or ""),
                )
            out.print(table)
            return
        tb = Testbed.open(testbed_id)
        info = tb.status()
        if links:
            info["link_stats"] = tb.link_stats()
        from .deploy import print_nodes

        if json_:
            info["nodes"] = print_nodes(testbed_id, json_=True)
            print_json(info)
            return
        for k, v in info.items():
            if k != "link_stats":
                out.print(f"{k}: {v}")
        print_nodes(testbed_id, json_=False)
        if links:
            _print_links(tb, info["link_stats"])

    @app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def exec_(
        testbed_id: str = typer.Argument(..., metavar="ID"),
        device: str = typer.Argument(..., help="The device to run in."),
        command: list[str] = typer.Argument(..., help="The command (after --)."),
    ) -> None:
        """Run a command inside a device (its namespace and cgroup): cnlab exec ID DEV -- CMD..."""
        from ..testbed.testbed import Testbed

        tb = Testbed.open(testbed_id)
        code = subprocess.run(tb.command(device, list(command)), check=False).returncode
        raise typer.Exit(code)

    @link_app.command("set")
    def link_set(
        testbed_id: str = typer.Argument(..., metavar="ID"),
        a: str = typer.Argument(...),
        b: str = typer.Argument(...),
        # values are checked once, by the direction codec (toolkit/topology/direction.py)
        delay_ms: float | None = typer.Option(None),
        jitter_ms: float | None = typer.Option(None),
        loss_pct: float | None = typer.Option(None, help="0-100."),
        loss_burst: float | None = typer.Option(None, help="Mean loss burst in packets (>= 1)."),
        rate_kbit: int | None = typer.Option(None, help="Rate limit; 0 = unlimited."),
        unlimited: bool = typer.Option(False, "--unlimited", help="Remove the rate limit."),
        reorder: bool | None = typer.Option(None, "--reorder/--no-reorder", help="Whether jitter may reorder frames."),
        one_way: bool = typer.Option(False, "--one-way", help="Only the direction A -> B."),
    ) -> None:
        """Change delay, jitter, loss, rate or reordering of the link A~B while the testbed runs."""
        from ..testbed.testbed import Testbed

        if unlimited and rate_kbit:
            raise InputError("--unlimited and --rate-kbit N contradict each other")
        changes: dict[str, object] = {
            k: v
            for k, v in dict(
                delay_ms=delay_ms,
                jitter_ms=jitter_ms,
                loss_pct=loss_pct,
                loss_burst=loss_burst,
                rate_kbit=rate_kbit,
                reorder=reorder,
            ).items()
            if v is not None
        }
        if unlimited or rate_kbit == 0:
            changes["rate_kbit"] = None
        if not changes:
            raise InputError(
                "nothing to change: give --delay-ms, --jitter-ms, --loss-pct, "
                "--loss-burst, --rate-kbit, --unlimited or --reorder"
            )
        cur = Testbed.open(testbed_id).set_link(a, b, one_way=one_way, **changes)
        out.print(f"{a}~{b}: forward {cur['forward']}, reverse {cur['reverse']}")

    @link_app.command("down")
    def link_down(
        testbed_id: str = typer.Argument(..., metavar="ID"), a: str = typer.Argument(...), b: str = typer.Argument(...)
    ) -> None:
        """Take the link A~B down (frames are dropped; static routes stay)."""
        from ..testbed.testbed import Testbed

        Testbed.open(testbed_id).set_link_up(a, b, False)

    @link_app.command("up")
    def link_up(
        testbed_id: str = typer.Argument(..., metavar="ID"), a: str = typer.Argument(...), b: str = typer.Argument(...)
    ) -> None:
        """Bring the link A~B back up."""
        from ..testbed.testbed import Testbed

        Testbed.open(testbed_id).set_link_up(a, b, True)

    @app.command()
    def partition(
        testbed_id: str = typer.Argument(..., metavar="ID"),
        groups: str = typer.Option(
            ...,
            "--groups",
            help="Comma-separated groups; each a site, a device, or devices joined by '+': west,east or w1+w2,e1",
        ),
    ) -> None:
        """Cut every link between the groups (devices in no group form one more group)."""
        from ..testbed.testbed import Testbed

        cut = Testbed.open(testbed_id).partition([g for g in groups.split(",") if g.strip()])
        out.print(f"cut {len(cut)} links: {', '.join(cut)}")

    @app.command()
    def heal(testbed_id: str = typer.Argument(..., metavar="ID")) -> None:
        """Undo partitions: links come back and the original routes return."""
        from ..testbed.testbed import Testbed

        healed = Testbed.open(testbed_id).heal()
        out.print(f"restored {len(healed)} links")


def _print_links(tb: Testbed, stats: dict[str, Any]) -> None:
    cols, rows = tb.shaper.stats_table(stats)
    table = Table(box=None, header_style="bold")
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    out.print(table)
