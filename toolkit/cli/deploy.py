"""CLI commands of federations: deploy, node stop|start|restart|kill|pause|resume, device reboot;
and the node table `cnlab status ID` prints. `register(app)` adds them (toolkit/cli/main.py calls it)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..topology.loader import load_any
from . import ansible as A
from .console import JsonOpt, err, out, print_json

NppOpt = typer.Option(
    None,
    "--nodes-per-process",
    min=1,
    help="Dense mode: host N nodes per process (no per-device cgroup; see docs/deploy.md).",
)


def _progress() -> tuple[Any, Any]:
    """A rich progress display on stderr as a deploy progress callback (and its closer)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not sys.stderr.isatty():
        return None, lambda: None
    bar = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("planning", total=1)
    bar.start()

    def update(what: str, done: int, total: int) -> None:
        bar.update(task, description=what, completed=done, total=total)

    return update, bar.stop


def run_deploy(
    tb: Any, *, topology: Any = None, nodes_per_process: int | None = None, json_: bool = False, **ansible_options: Any
) -> None:
    from ..deploy.deployers import deploy_method
    from ..deploy.direct import deploy

    if deploy_method(tb) == "ansible":  # devices deployed over SSH (docs/ansible.md)
        A.run_ansible_deploy(tb, topology, json_=json_, **ansible_options)
        return

    update, stop = _progress()
    t0 = time.monotonic()
    try:
        dep = deploy(tb, nodes_per_process=nodes_per_process, progress=update, topology=topology)
    finally:
        stop()
    if json_:
        print_json(
            {
                "id": tb.id,
                "mode": dep.mode,
                "nodes": len(dep.nodes),
                "healthy_s": (tb.state.meta.get("deploy") or {}).get("healthy_s"),
            }
        )
    else:
        err.print(
            f"federation on {tb.id}: {len(dep.nodes)} nodes of {dep.plan.image} healthy "
            f"({dep.mode} mode) in {time.monotonic() - t0:.1f} s"
        )


def print_nodes(testbed_id: str, json_: bool) -> list[dict[str, Any]] | None:
    """The node table of `cnlab status ID`; with json_, the rows (printed by the caller)."""
    from ..deploy.deployment import Deployment

    if Deployment.exists(testbed_id):
        rows = [s.to_dict() for s in Deployment.open(testbed_id).status()]
    else:
        remote = A.remote_nodes(testbed_id)  # nodes deployed with Ansible (over SSH)
        if remote is None:
            return None
        rows = remote.status()
    if json_:
        return rows
    table = Table(box=None, header_style="bold", title="nodes", title_justify="left")
    for col in ("device", "domain", "state", "health", "pid", "version", "peers", "outbox", "error"):
        table.add_column(col)
    colour = {"started": "green", "deployed": "yellow", "registered": "yellow"}  # else red
    for r in rows:
        peers = "" if r["peers_reachable"] is None else f"{r['peers_reachable']}/{r['peers_configured']}"
        table.add_row(
            r["device"],
            r["domain"],
            f"[{colour.get(r['state'], 'red')}]{r['state']}[/]",
            r["health"],
            str(r["pid"] or ""),
            r["version"] or "",
            peers,
            "" if r["outbox_depth"] is None else str(r["outbox_depth"]),
            (r["error"] or "")[:60],
        )
    out.print(table)
    return rows


def register(app: typer.Typer) -> None:
    node_app = typer.Typer(
        help="Stop, start, kill, pause or resume a node of a federation.", no_args_is_help=True, rich_markup_mode=None
    )
    device_app = typer.Typer(help="Faults on whole devices.", no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(node_app, name="node")
    app.add_typer(device_app, name="device")

    @app.command("deploy")
    def deploy_cmd(
        testbed_id: str = typer.Argument(..., metavar="ID", help="A live testbed."),
        nodes_per_process: int | None = NppOpt,
        topology: Path | None = typer.Option(
            None,
            "--topology",
            help="Take the federation block from this topology file (default: every device, trust all).",
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (keys are created) and start nothing."),
        artifact: Path | None = A.ArtifactOpt,
        rolling: bool | None = A.RollingOpt,
        remove: bool = A.RemoveOpt,
        node_exporter: bool = A.NodeExporterOpt,
        strategy: str = A.StrategyOpt,
        pipelining: bool = A.PipeliningOpt,
        forks: int = A.ForksOpt,
        mitogen: bool = A.MitogenOpt,
        keep_runner_dir: bool = A.KeepRunnerOpt,
        json_: bool = JsonOpt,
    ) -> None:
        """Deploy P2Pvalue nodes onto a live testbed's devices and wait until all are healthy:
        directly into emulated devices, or with Ansible over SSH onto `deploy: ansible` and ssh
        devices (docs/ansible.md); a second Ansible run changes nothing."""
        from ..testbed.testbed import Testbed

        tb = Testbed.open(testbed_id)
        topo = load_any(topology) if topology else None
        ansible_options = dict(
            artifact=artifact,
            rolling=rolling,
            remove=remove,
            node_exporter=node_exporter,
            strategy=strategy,
            pipelining=pipelining,
            forks=forks,
            mitogen=mitogen,
            keep_runner_dir=keep_runner_dir,
        )
        if dry_run:
            from ..deploy.direct import plan_for

            plan, _ = plan_for(tb, topology=topo, nodes_per_process=nodes_per_process)
            if json_:
                sys.stdout.write(plan.to_json(configs=True) + "\n")
            else:
                out.print(plan.summary(), markup=False)
            return
        run_deploy(tb, topology=topo, nodes_per_process=nodes_per_process, json_=json_, **ansible_options)

    def lifecycle(op: str, doc: str) -> None:
        def cmd(
            testbed_id: str = typer.Argument(..., metavar="ID"),
            node: str = typer.Argument(..., metavar="NODE", help="The device the node runs on."),
        ) -> None:
            from ..deploy.deployment import Deployment

            t0 = time.monotonic()
            remote = A.remote_nodes(testbed_id)  # nodes deployed with Ansible: their service manager
            if remote is not None:
                remote.run(op, node)
            else:
                getattr(Deployment.open(testbed_id), op)(node)
            err.print(f"{node}: {op} done in {time.monotonic() - t0:.2f} s")
            if op in ("stop", "start", "restart"):  # Prometheus scrapes the nodes meant to run
                from ..monitor.testbed_monitor import sync_node_targets

                sync_node_targets(testbed_id)

        cmd.__doc__ = doc
        node_app.command(op)(cmd)

    lifecycle("stop", "Stop a node (SIGTERM); returns when it exited.")
    lifecycle("start", "Start a node; returns when it answers its health check.")
    lifecycle("restart", "Stop, then start a node; returns when it is healthy again.")
    lifecycle("kill", "Kill a node (SIGKILL): a crash; `cnlab status` shows fail_start.")
    lifecycle(
        "pause",
        "Freeze a node (SIGSTOP; dense mode: its host freezes it alone); returns when it took effect.",
    )
    lifecycle("resume", "Continue a paused node (SIGCONT; dense mode: its host thaws it).")

    @device_app.command("reboot")
    def reboot(
        testbed_id: str = typer.Argument(..., metavar="ID"), device: str = typer.Argument(..., help="The device.")
    ) -> None:
        """Reboot a device: all its processes stop, then its node starts again (returns when healthy)."""
        from ..deploy.deployment import Deployment

        t0 = time.monotonic()
        Deployment.open(testbed_id).reboot_device(device)
        err.print(f"{device}: rebooted in {time.monotonic() - t0:.2f} s")
