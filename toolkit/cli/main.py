"""The `cnlab` command line. Commands parse arguments, call the library, and print results;
errors are CnlabError subclasses that `main` turns into messages and exit codes
(0 ok, 1 failure at run time, 2 bad input)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer
from rich.table import Table

from .. import __version__, capabilities
from ..errors import CnlabError, InputError, RunError
from .console import JsonOpt, err, out, print_json

app = typer.Typer(
    name="cnlab",
    help="Testbeds, deployments and experiments for community networks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
import_app = typer.Typer(help="Import topologies from other formats.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(import_app, name="import")


def _version(value: bool) -> None:
    if value:
        out.print(f"cnlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Testbeds, deployments and experiments for community networks."""


FileArg = typer.Argument(..., help="A topology YAML file.")


@app.command()
def validate(file: Path = FileArg, json_: bool = JsonOpt) -> None:
    """Check a topology file; print every mistake as file:line:col and exit 2 if there is any."""
    from ..topology.loader import load_topology

    topo = load_topology(file)
    if json_:
        print_json({"file": str(file), "valid": True, "devices": len(topo.devices), "links": len(topo.links)})
    else:
        out.print(f"{file}: valid: {len(topo.devices)} devices, {len(topo.links)} links, {len(topo.sites)} sites")


@app.command()
def show(file: Path = FileArg, json_: bool = JsonOpt) -> None:
    """Summarize a topology: devices per site and profile, links per preset, diameter, path delays."""
    from ..topology.analysis import summarize
    from ..topology.loader import load_topology

    s = summarize(load_topology(file))
    if json_:
        print_json(s)
        return
    d, links, g = s["devices"], s["links"], s["graph"]
    out.print(
        f"[bold]{s['name']}[/]: {d['total']} devices, {links['total']} links "
        f"({links['down']} down), {len(s['sites'])} sites"
    )
    for title, counts in (
        ("site", d["by_site"]),
        ("profile", d["by_profile"]),
        ("kind", d["by_kind"]),
        ("link preset", links["by_preset"]),
    ):
        table = Table(title=f"by {title}", title_justify="left", show_header=False, box=None)
        for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(f"  {key}", str(count))
        out.print(table)
    pd = g["path_delay_ms"]
    sampled = f" (sampled from {g['sampled_sources']} sources)" if g["sampled_sources"] else ""
    out.print(
        f"graph: {g['components']} component(s), diameter {g['diameter_hops']} hops; "
        f"shortest-path one-way delay ms: min {pd['min']}, median {pd['median']}, "
        f"p95 {pd['p95']}, max {pd['max']}{sampled}"
    )
    if s["federation"]:
        out.print(f"federation: {s['federation']['nodes']} nodes of image {s['federation']['image']}")
    if s["provenance"]:
        p = s["provenance"]
        out.print(
            f"imported from {p.get('format')} {p.get('file')}: {p.get('nodes')} nodes, {p.get('links')} "
            f"links listed, {p.get('self_loops_skipped', 0)} self-loops skipped; rule: {p.get('rule')}"
        )


@import_app.command("netjson")
def import_netjson(
    file: Path = typer.Argument(..., help="A NetJSON NetworkGraph file."),
    output: Path = typer.Option(..., "-o", "--output", help="The topology YAML file to write."),
    link: str = typer.Option("mesh-2.4ghz", help="Preset giving per-attempt delay, jitter and rate."),
    mac_attempts: int = typer.Option(4, min=1, max=16, help="802.11 attempts per frame, for the ETX loss rule."),
    profile: str = typer.Option("host", help="Hardware profile for every imported device."),
    site: str | None = typer.Option(None, help="Put every imported device in this site."),
    name: str | None = typer.Option(None, help="Topology name (default: from the graph's label)."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Import a NetJSON NetworkGraph as topology YAML (ETX cost -> delay, loss, rate)."""
    from ..topology.dump import to_yaml
    from ..topology.netjson import import_netjson as do_import

    if output.exists() and not force:
        raise InputError(f"{output} exists; pass --force to overwrite it")
    topo = do_import(file, link=link, mac_attempts=mac_attempts, profile=profile, site=site, name=name)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(to_yaml(topo), encoding="utf-8")
    tmp.replace(output)  # all or nothing: no half-written topology on failure
    p = topo.provenance
    out.print(
        f"wrote {output}: {len(topo.devices)} devices, {len(topo.links)} links "
        f"(the file lists {p['links']} links; {p['self_loops_skipped']} self-loops skipped)"
    )
    if topo.allow_partitioned:
        err.print("[yellow]note:[/] the graph is not connected; the topology sets allow_partitioned: true")


@app.command()
def schema(
    kind: str = typer.Argument("topology", help="Which schema: topology or experiment."),
) -> None:
    """Print the JSON Schema of an input format, for editor completion."""
    from ..experiment.schema import json_schema as experiment_schema
    from ..topology.schema import json_schema

    schemas = {"topology": json_schema, "experiment": experiment_schema}
    if kind not in schemas:
        raise InputError(f"unknown schema '{kind}'; known: {', '.join(schemas)}")
    print_json(schemas[kind]())


@app.command()
def doctor(
    fix: bool = typer.Option(False, "--fix", help="Install what is missing (Debian packages, as root)."),
    json_: bool = JsonOpt,
) -> None:
    """Check this machine: privileges, namespaces, qdiscs, nftables, cgroups, prometheus, sshd, ansible."""
    findings = capabilities.probe()
    if fix:
        packages = capabilities.missing_apt_packages(findings)
        if packages:
            _apt_install(packages)
            capabilities.kernel_features.cache_clear()
            findings = capabilities.probe()
    if json_:
        print_json({"ok": findings.ok, "checks": [vars(c) for c in findings.checks]})
    else:
        table = Table(show_header=True, header_style="bold", box=None)
        for col in ("check", "", "found", "how to fix"):
            table.add_column(col)
        for c in findings.checks:
            mark = "[green]ok[/]" if c.ok else ("[red]MISSING[/]" if c.required else "[yellow]absent[/]")
            table.add_row(c.name, mark, c.detail, "" if c.ok else (c.fix or ""))
        out.print(table)
        shaper = "netem" if capabilities.has_netem() else "wire (userspace; this kernel has no netem)"
        out.print(f"link shaper for emulated testbeds: {shaper}")
    if not findings.ok:
        missing = ", ".join(c.name for c in findings.checks if c.required and not c.ok)
        raise RunError(f"missing: {missing}" + ("" if fix else "; `cnlab doctor --fix` installs what apt can"))


def _register_commands() -> None:
    from . import ansible, deploy, experiment, image, monitor, testbed

    for area in (testbed, deploy, image, ansible, monitor, experiment):
        area.register(app)


_register_commands()


def _apt_install(packages: list[str]) -> None:
    if not capabilities.is_root():
        raise RunError(f"installing {' '.join(packages)} needs root: run `sudo cnlab doctor --fix`")
    err.print(f"installing with apt: {' '.join(packages)}")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        if subprocess.run(argv, env=env, check=False).returncode != 0:
            raise RunError(f"`{' '.join(argv)}` failed")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. Typer handles usage errors itself (exit 2); cnlab's own errors are mapped here."""
    try:
        app(args=argv, prog_name="cnlab")
    except InputError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except CnlabError as exc:
        err.print(f"[red]error:[/] {exc}")
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
