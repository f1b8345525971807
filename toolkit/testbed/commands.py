"""CLI commands of emulated testbeds: up, down, status, exec, link set/down/up, partition, heal.

`register(app)` adds them to the root typer app (toolkit/cli.py calls it).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..console import JsonOpt, err, out, print_json
from ..errors import InputError



def _load(path: Path):
    from ..topology import load_topology

    if path.suffix == ".json" or path.name.endswith(".netjson"):
        from ..topology.netjson import import_netjson

        return import_netjson(path)
    return load_topology(path)


def _progress():
    """A rich progress bar on stderr, as an executor progress callback (and a closer)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:<32}"), BarColumn(), TimeElapsedColumn(),
                   console=err, transient=True)
    task = bar.add_task("planning", total=1)
    bar.start()

    def update(title: str, done: int, total: int) -> None:
        bar.update(task, description=title, completed=done, total=total)

    return update, bar.stop


def register(app: typer.Typer) -> None:
    link_app = typer.Typer(help="Change a link of a live testbed.", no_args_is_help=True,
                           rich_markup_mode=None)
    app.add_typer(link_app, name="link")

    @app.command()
    def up(
        topology: Path = typer.Argument(..., help="A topology YAML file (or a NetJSON graph)."),
        testbed_id: Optional[str] = typer.Option(None, "--id", help="Testbed id: 1-5 of [a-z0-9], "
                                                 "starting with a letter (default: random)."),
        shaper: Optional[str] = typer.Option(None, help="netem | wire | none (default: netem if the "
                                             "kernel has it, else wire; see `cnlab doctor`)."),
        routing: Optional[str] = typer.Option(None, help="static (shortest paths by delay) | babeld "
                                              "(default: the topology's routing, else static)."),
        ipv6: bool = typer.Option(True, "--ipv6/--no-ipv6", help="Also fd00::/8 addresses and routes."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and create nothing."),
        deploy: bool = typer.Option(False, "--deploy", help="Then deploy the topology's federation (`cnlab deploy`)."),
        nodes_per_process: Optional[int] = typer.Option(None, "--nodes-per-process", min=1,
                                                        help="With --deploy: dense mode, N nodes per process."),
        json_: bool = JsonOpt,
    ) -> None:
        """Bring a topology up on this machine as network namespaces; print the testbed id."""
        from .testbed import Testbed

        if routing not in (None, "static", "babeld"):
            raise InputError(f"unknown routing {routing!r}: use static or babeld")
        topo = _load(topology)
        routing = routing or topo.routing
        if dry_run:
            plan = Testbed.make_plan(topo, testbed_id, shaper=shaper, routing=routing,  # type: ignore[arg-type]
                                     ipv6=ipv6)
            if json_:
                sys.stdout.write(plan.to_json() + "\n")
                return
            out.print(plan.summary())
            for phase in plan.phases():
                out.print(f"# {phase.title}")
                for step in phase.steps:
                    where = f" in {step.netns}" if step.netns else ""
                    tool = {"ip": "ip -batch", "tc": "tc -batch", "sh": "sh", "files": "write", "nsops": "in-process",
                            "wire": "start wire", "converge": "wait for routes"}[step.kind]
                    out.print(f"## {tool}{where}")
                    for path in step.files:
                        out.print(f"  write {path}")
                    for line in step.lines:
                        out.print("  " + line.replace("\n", "\n  "), markup=False)
            return
        update, stop = _progress() if sys.stderr.isatty() else (None, lambda: None)
        t0 = time.monotonic()
        try:
            tb = Testbed.up(topo, testbed_id, shaper=shaper, routing=routing,  # type: ignore[arg-type]
                            ipv6=ipv6, progress=update)
        finally:
            stop()
        if not json_:
            err.print(f"testbed {tb.id} up: {len(tb.plan.devices)} devices, {len(tb.plan.links)} "
                      f"links, shaper {tb.plan.shaper}, routing {tb.plan.routing}, "
                      f"{time.monotonic() - t0:.1f} s")
        from ..deploy.direct import remember_federation

        remember_federation(tb, topo)
        if deploy:
            from ..deploy_commands import run_deploy

            run_deploy(tb, topology=topo, nodes_per_process=nodes_per_process)
        if json_:
            print_json(tb.status())
        else:
            print(tb.id)

    @app.command()
    def down(testbed_id: str = typer.Argument(..., metavar="ID", help="The testbed id.")) -> None:
        """Remove a testbed: exactly the resources its journal lists (also after a crashed `up`)."""
        from .testbed import Testbed

        t0 = time.monotonic()
        warnings = Testbed.down_id(testbed_id)
        for w in warnings:
            err.print(f"[yellow]warning:[/] {w}")
        err.print(f"testbed {testbed_id} removed in {time.monotonic() - t0:.1f} s")

    @app.command()
    def status(
        testbed_id: Optional[str] = typer.Argument(None, metavar="[ID]", help="One testbed (default: all)."),
        links: bool = typer.Option(False, "--links", help="Per-link, per-direction counters and lateness."),
        json_: bool = JsonOpt,
    ) -> None:
        """List live testbeds and their state; with an ID, one testbed (and --links its links)."""
        from .testbed import Testbed

        if testbed_id is None:
            rows = Testbed.list()
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
                table.add_row(r["id"], r["phase"], str(r["topology"]), str(r["devices"]), str(r["links"]),
                              str(r["shaper"]), str(r["routing"]), str(r["up_s"] or ""))
            out.print(table)
            return
        tb = Testbed.open(testbed_id)
        info = tb.status()
        if links:
            info["link_stats"] = tb.link_stats()
        from ..deploy_commands import print_nodes

        if json_:
            info["nodes"] = print_nodes(testbed_id, json_=True)
            print_json(info)
            return
        for k, v in info.items():
            if k != "link_stats":
                out.print(f"{k}: {v}")
        print_nodes(testbed_id, json_=False)
        if links:
            _print_links(tb.plan.shaper, info["link_stats"])

    @app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def exec_(
        testbed_id: str = typer.Argument(..., metavar="ID"),
        device: str = typer.Argument(..., help="The device to run in."),
        command: list[str] = typer.Argument(..., help="The command (after --)."),
    ) -> None:
        """Run a command inside a device (its namespace and cgroup): cnlab exec ID DEV -- CMD..."""
        from .testbed import Testbed

        tb = Testbed.open(testbed_id)
        code = subprocess.run(tb.command(device, list(command)), check=False).returncode
        raise typer.Exit(code)

    @link_app.command("set")
    def link_set(
        testbed_id: str = typer.Argument(..., metavar="ID"),
        a: str = typer.Argument(...), b: str = typer.Argument(...),
        delay_ms: Optional[float] = typer.Option(None, min=0), jitter_ms: Optional[float] = typer.Option(None, min=0),
        loss_pct: Optional[float] = typer.Option(None, min=0, max=100),
        loss_burst: Optional[float] = typer.Option(None, min=1),
        rate_kbit: Optional[int] = typer.Option(None, min=1),
        one_way: bool = typer.Option(False, "--one-way", help="Only the direction A -> B."),
    ) -> None:
        """Change delay, jitter, loss or rate of the link A~B while the testbed runs."""
        from .testbed import Testbed

        changes = {k: v for k, v in dict(delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct,
                                         loss_burst=loss_burst, rate_kbit=rate_kbit).items() if v is not None}
        if not changes:
            raise InputError("nothing to change: give --delay-ms, --jitter-ms, --loss-pct, "
                             "--loss-burst or --rate-kbit")
        cur = Testbed.open(testbed_id).set_link(a, b, one_way=one_way, **changes)
        out.print(f"{a}~{b}: forward {cur['forward']}, reverse {cur['reverse']}")

    @link_app.command("down")
    def link_down(testbed_id: str = typer.Argument(..., metavar="ID"), a: str = typer.Argument(...),
                  b: str = typer.Argument(...)) -> None:
        """Take the link A~B down (frames are dropped; static routes stay)."""
        from .testbed import Testbed

        Testbed.open(testbed_id).set_link_up(a, b, False)

    @link_app.command("up")
    def link_up(testbed_id: str = typer.Argument(..., metavar="ID"), a: str = typer.Argument(...),
                b: str = typer.Argument(...)) -> None:
        """Bring the link A~B back up."""
        from .testbed import Testbed

        Testbed.open(testbed_id).set_link_up(a, b, True)

    @app.command()
    def partition(
        testbed_id: str = typer.Argument(..., metavar="ID"),
        groups: str = typer.Option(..., "--groups", help="Comma-separated groups; each a site, a "
                                   "device, or devices joined by '+': west,east or w1+w2,e1"),
    ) -> None:
        """Cut every link between the groups (devices in no group form one more group)."""
        from .testbed import Testbed

        cut = Testbed.open(testbed_id).partition([g for g in groups.split(",") if g.strip()])
        out.print(f"cut {len(cut)} links: {', '.join(cut)}")

    @app.command()
    def heal(testbed_id: str = typer.Argument(..., metavar="ID")) -> None:
        """Undo partitions: links come back and the original routes return."""
        from .testbed import Testbed

        healed = Testbed.open(testbed_id).heal()
        out.print(f"restored {len(healed)} links")


def _print_links(shaper: str, stats: dict) -> None:
    table = Table(box=None, header_style="bold")
    if shaper == "wire":
        from .wire_stats import lateness_quantile  # type: ignore[import-not-found]

        for col in ("link", "dir", "up", "ringdrop", "rx", "fwd", "lost", "qdrop", "downdrop",
                    "late50ms", "late99ms", "latemax"):
            table.add_column(col)
        for lid, s in stats.items():
            for d in ("forward", "reverse"):
                ds = s.get(d) or {}
                arrow = "a>b" if d == "forward" else "b>a"
                lat = ds.get("lateness") or {"count": 0}
                table.add_row(lid, arrow, str(s.get("up")), str(ds.get("ring_drops")),
                              str(ds.get("received")), str(ds.get("forwarded")),
                              str(ds.get("lost")), str(ds.get("queue_drops")), str(ds.get("dropped_down")),
                              f"{lateness_quantile(lat, 0.5) * 1000:.2f}" if lat.get("count") else "-",
                              f"{lateness_quantile(lat, 0.99) * 1000:.2f}" if lat.get("count") else "-",
                              f"{lat.get('max_s', 0) * 1000:.2f}" if lat.get("count") else "-")
    else:
        for col in ("link", "end", "tx packets", "tx bytes", "rx packets", "rx bytes", "dropped"):
            table.add_column(col)
        for lid, s in stats.items():
            for end in ("a", "b"):
                e = s.get(end) or {}
                tx, rx = e.get("tx", {}), e.get("rx", {})
                table.add_row(lid, end, str(tx.get("packets")), str(tx.get("bytes")), str(rx.get("packets")),
                              str(rx.get("bytes")), str(tx.get("dropped", 0) + rx.get("dropped", 0)))
    out.print(table)
