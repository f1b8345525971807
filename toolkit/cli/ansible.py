"""CLI of deploying over SSH: the Ansible side of `cnlab deploy`, inventory, devices probe, collect.

`register(app)` adds them to the root typer app (toolkit/cli/main.py calls it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ..errors import InputError, RunError
from .console import JsonOpt, err, out, print_json

if TYPE_CHECKING:
    from ..deploy.ansible import RunOptions, RunResult
    from ..deploy.remote import Device
    from ..deploy.remote_service import RemoteNodes
    from ..images.wheelhouse import Artifact
    from ..testbed.testbed import Testbed
    from ..topology.model import Topology


def _testbed(testbed_id: str) -> Testbed:
    from ..testbed.testbed import Testbed

    return Testbed.open(testbed_id)


def _artifact(path: Path | None, image: str = "p2pvalue") -> Artifact:
    from ..images.wheelhouse import build, read_artifact

    if path is not None:
        if not path.exists():
            raise InputError(f"--artifact {path}: no such file (build one with `cnlab image build {image}`)")
        return read_artifact(path)
    err.print(f"image {image}: using the current wheelhouse artifact (building it if needed)")
    return build(image)


def _progress(hosts: list[str]) -> tuple[Callable[[str, str, str], None], Callable[[], None]]:
    """A rich display: one line per host with its current task; a callback for the deployer."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True)
    rows = {h: bar.add_task(f"{h:<12} waiting") for h in hosts}
    counts = {h: [0, 0] for h in hosts}  # tasks done, changed
    current = {"task": ""}
    bar.start()

    def update(host: str, task: str, status: str) -> None:
        if not host:
            current["task"] = task
            return
        if host not in rows:
            return
        if status in ("ok", "changed", "skipped", "failed", "unreachable"):
            counts[host][0] += 1
            counts[host][1] += status == "changed"
        mark = {"failed": " FAILED", "unreachable": " UNREACHABLE", "retry": " (retrying)"}.get(status, "")
        bar.update(
            rows[host], description=f"{host:<12} {counts[host][0]:>3} tasks, {counts[host][1]} changed  {task}{mark}"
        )

    return update, bar.stop


def _summary_table(result: RunResult) -> Table:
    table = Table(title=f"{result.playbook}: {result.status} in {result.duration_s:.1f} s")
    for col in ("host", "ok", "changed", "failed", "unreachable", "skipped"):
        table.add_column(col, justify="left" if col == "host" else "right")
    for host, s in sorted(result.hosts.items()):
        table.add_row(host, str(s.ok), str(s.changed), str(s.failed), str(s.unreachable), str(s.skipped))
    return table


def _run_options(strategy: str, pipelining: bool, forks: int, mitogen: bool, keep: bool) -> RunOptions:
    from ..deploy.ansible import RunOptions

    if strategy not in ("linear", "free"):
        raise InputError(f"--strategy {strategy!r}: use linear or free")
    if forks < 1:
        raise InputError("--forks must be at least 1")
    if mitogen:
        try:
            import ansible_mitogen  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
        except ImportError:
            raise InputError("--mitogen: Mitogen is not installed (pip install mitogen)") from None
    return RunOptions(
        strategy=strategy, pipelining=pipelining, forks=forks, mitogen=mitogen, keep_private_data_dir=keep
    )


def _remote_devices(target: str) -> tuple[list[Device], str]:
    """(devices, known_hosts) of a testbed id (its `deploy: ansible` devices) or a topology file
    (its ssh devices; known_hosts under ~/.local/state/cnlab/fleets/<topology>/)."""
    from ..deploy.ansible_nodes import known_hosts_of, ssh_devices_of_topology, testbed_hosts
    from ..deploy.remote import Device

    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return ssh_devices_of_topology(path)
    tb = _testbed(target)
    hosts, _ = testbed_hosts(tb)
    return ([Device(h.endpoint, h.root) for h in hosts], known_hosts_of(tb))


def remote_nodes(testbed_id: str) -> RemoteNodes | None:
    """The Ansible-deployed nodes of a testbed (stop/start/restart over SSH), or None."""
    from ..deploy.ansible_nodes import known_hosts_of, testbed_hosts
    from ..deploy.deployers import deploy_method
    from ..deploy.remote_service import RemoteNodes

    tb = _testbed(testbed_id)
    if deploy_method(tb) != "ansible":
        return None
    hosts, _ = testbed_hosts(tb)
    return RemoteNodes({h.name: h for h in hosts}, known_hosts_of(tb), tb.state.dir)


def remove_remote_nodes(testbed_id: str) -> None:
    """`cnlab down` of a remote testbed with deployed nodes: the cleanup role first. A failure
    keeps the testbed (and says which device failed), so `down` can be run again."""
    from ..deploy.ansible import cleanup_remote
    from ..testbed.state import TestbedState
    from ..testbed.testbed import Testbed

    if not (TestbedState(testbed_id).dir / "plan.json").exists():
        return  # a crashed `up`: nothing was deployed
    tb = Testbed.open(testbed_id)
    if tb.plan.kind != "remote":
        return
    update, stop = _progress(list(tb.plan.devices))
    try:
        result = cleanup_remote(tb, progress=update)
    finally:
        stop()
    if result is None:
        return
    out.print(_summary_table(result))
    if not result.ok:
        raise RunError(
            f"removing the nodes from testbed {testbed_id}'s devices failed (testbed kept; run `cnlab down "
            f"{testbed_id}` again):\n  " + "\n  ".join(str(f) for f in result.failures[:20])
        )


def run_ansible_deploy(
    tb: Testbed,
    topology: Topology | None = None,
    *,
    artifact: Path | None = None,
    rolling: bool | None = None,
    remove: bool = False,
    node_exporter: bool = False,
    strategy: str = "linear",
    pipelining: bool = True,
    forks: int = 20,
    mitogen: bool = False,
    keep_runner_dir: bool = False,
    json_: bool = False,
) -> None:
    """`cnlab deploy ID` for testbeds whose devices are deployed with Ansible (over SSH)."""
    from ..deploy.ansible import for_testbed

    opts = _run_options(strategy, pipelining, forks, mitogen, keep_runner_dir)
    deployer = for_testbed(tb, topology)
    art = _artifact(artifact)
    update, stop = _progress([h.name for h in deployer.hosts])
    try:
        if remove:
            result = deployer.cleanup(art, opts=opts, progress=update)
            rolling_used, previous = False, None
        else:
            outcome = deployer.deploy(art, rolling=rolling, node_exporter=node_exporter, opts=opts, progress=update)
            result, rolling_used, previous = outcome.result, outcome.rolling, outcome.previous_version
    finally:
        stop()
    if json_:
        print_json({**result.to_dict(), "rolling": rolling_used, "version": art.version, "previous_version": previous})
    else:
        out.print(_summary_table(result))
        if result.private_data_dir:
            out.print(f"runner directory kept: {result.private_data_dir}")
        if result.ok:
            what = (
                "removed"
                if remove
                else (f"rolling upgrade {previous} -> {art.version}" if rolling_used else f"{art.version} deployed")
            )
            out.print(f"{what}: {result.changed} changed" + (" (already as wanted)" if result.changed == 0 else ""))
    if not result.ok:
        raise RunError("deploy failed:\n  " + "\n  ".join(str(f) for f in result.failures[:20]))


# The options `cnlab deploy` offers for the Ansible deployer (toolkit/deploy_commands.py adds them)
ArtifactOpt = typer.Option(
    None,
    "--artifact",
    help="Ansible: a wheelhouse from `cnlab image build` (default: the current one, built if needed).",
)
RollingOpt = typer.Option(
    None,
    "--rolling/--all-at-once",
    help="Ansible: rolling upgrade (serial 1, 10 %, "
    "25 %, health checked between batches); default: rolling when the version differs "
    "from the deployed one.",
)
RemoveOpt = typer.Option(False, "--remove", help="Ansible: stop and remove the nodes (cleanup role).")
NodeExporterOpt = typer.Option(False, "--node-exporter", help="Ansible: also run the node exporter.")
StrategyOpt = typer.Option("linear", help="Ansible strategy: linear | free.")
PipeliningOpt = typer.Option(True, "--pipelining/--no-pipelining", help="Ansible SSH pipelining.")
ForksOpt = typer.Option(20, help="Ansible: hosts worked on at once.")
MitogenOpt = typer.Option(False, "--mitogen", help="Ansible: Mitogen's strategy (if installed).")
KeepRunnerOpt = typer.Option(
    False, "--keep-runner-dir", help="Ansible: keep ansible-runner's private data directory (artifacts) for debugging."
)


def register(app: typer.Typer) -> None:
    devices_app = typer.Typer(help="Work on devices over SSH.", no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(devices_app, name="devices")

    @app.command()
    def inventory(
        testbed_id: str = typer.Argument(..., help="A live testbed with `deploy: ansible` or ssh devices."),
        output: Path | None = typer.Option(None, "-o", "--output", help="Write here (default: stdout)."),
        artifact: Path | None = typer.Option(None, "--artifact", help="The wheelhouse to install."),
        node_exporter: bool = typer.Option(False, "--node-exporter", help="Also run the node exporter."),
    ) -> None:
        """Write a standard Ansible inventory (YAML, per-host variables) of a testbed, so that
        `ansible-playbook -i inventory.yml playbooks/site.yml` does what `cnlab deploy` does."""
        from ..deploy.ansible import check_host_keys, for_testbed
        from ..deploy.inventory import inventory_yaml

        deployer = for_testbed(_testbed(testbed_id))
        check_host_keys(deployer.hosts, deployer.known_hosts)  # so plain ansible-playbook trusts them
        text = inventory_yaml(deployer.inventory(_artifact(artifact), node_exporter))
        if output is None:
            out.file.write(text)
        else:
            output.write_text(text)
            err.print(f"wrote {output} ({len(deployer.hosts)} hosts)")

    @devices_app.command("probe")
    def probe_cmd(
        target: str = typer.Argument(..., help="A topology file (its ssh devices) or a testbed id."),
        max_parallel: int = typer.Option(10, help="Devices probed at once."),
        json_: bool = JsonOpt,
    ) -> None:
        """Probe devices over SSH: architecture, memory, kernel, Python, netem, nftables, free disk."""
        from ..deploy.remote import probe

        devices, known = _remote_devices(target)
        facts = probe(devices, known, max_parallel)
        if json_:
            print_json([f.to_dict() for f in facts])
        else:
            table = Table()
            for col in (
                "device",
                "arch",
                "os",
                "kernel",
                "python",
                "memory MB",
                "available MB",
                "free disk MB",
                "netem",
                "nft",
                "error",
            ):
                table.add_column(col)
            for f in facts:
                table.add_row(
                    f.device,
                    f.arch,
                    f.os,
                    f.kernel,
                    f.python,
                    str(f.memory_mb),
                    str(f.memory_available_mb),
                    str(f.disk_free_mb),
                    f.netem,
                    f.nft,
                    f.error,
                )
            out.print(table)
        failed = [f for f in facts if f.error]
        if failed:
            raise RunError(
                f"{len(failed)} of {len(facts)} devices could not be probed: "
                + "; ".join(f"{f.device}: {f.error}" for f in failed[:5])
            )

    @app.command()
    def collect(
        testbed_id: str = typer.Argument(..., help="A testbed id (its `deploy: ansible` devices) or a topology file."),
        out_dir: Path = typer.Option(..., "--out", help="Directory for <device>/ with logs and databases."),
        max_parallel: int = typer.Option(10, help="Devices worked on at once."),
        json_: bool = JsonOpt,
    ) -> None:
        """Collect node logs, databases (consistent SQLite copies), configs and journal excerpts."""
        from ..deploy.remote import collect as collect_files

        devices, known = _remote_devices(testbed_id)
        results = collect_files(devices, known, out_dir, max_parallel)
        if json_:
            print_json([{"device": r.device, "files": r.files, "error": r.error} for r in results])
        else:
            for r in results:
                out.print(f"{r.device:<12} {', '.join(r.files) or '-'}  {r.error}")
            out.print(f"into {out_dir}")
        failed = [r for r in results if r.error]
        if failed:
            raise RunError(
                f"{len(failed)} of {len(results)} devices failed: "
                + "; ".join(f"{r.device}: {r.error}" for r in failed[:5])
            )
