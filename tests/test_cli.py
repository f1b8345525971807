"""The real `cnlab` entry point, in a subprocess, and the README that documents it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from toolkit.cli.doc import commands, reference
from toolkit.topology.presets import LINK_PRESETS, PROFILES

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "experiments" / "topologies"


def test_version_and_help(cnlab) -> None:
    from toolkit import __version__

    res = cnlab("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"cnlab {__version__}"
    res = cnlab("--help")
    assert res.returncode == 0 and "validate" in res.stdout and "doctor" in res.stdout


def test_validate_good_and_bad(cnlab, tmp_path: Path) -> None:
    res = cnlab("validate", EXAMPLES / "two-sites.yaml")
    assert res.returncode == 0, res.stderr
    assert "12 devices, 15 links, 2 sites" in res.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\ndevices:\n  a: {profle: alix}\n  b: {}\n  b: {}\nlinks:\n"
        "  - {between: [a, c]}\n  - {between: [a, b], loss_pct: 120}\n  - {between: [b, b]}\n"
    )
    res = cnlab("validate", bad)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert [re.match(r"^(.*):(\d+):(\d+): ", line).groups()[1:] for line in lines] == [
        ("3", "7"),
        ("5", "3"),
        ("7", "19"),
        ("8", "33"),
        ("9", "15"),
    ]
    assert all(line.startswith(f"{bad}:") for line in lines)
    assert "Traceback" not in res.stderr


def test_bad_usage_and_missing_file_exit_2(cnlab, tmp_path: Path) -> None:
    assert cnlab("validate", "--no-such-option").returncode == 2
    res = cnlab("validate", tmp_path / "nope.yaml")
    assert res.returncode == 2 and "no such file" in res.stderr


def test_show_json_reports_counts_and_paths(cnlab) -> None:
    res = cnlab("show", EXAMPLES / "two-sites.yaml", "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["devices"]["total"] == 12 and s["links"]["total"] == 15
    assert s["devices"]["by_site"] == {"west": 6, "east": 6}
    assert s["links"]["by_preset"]["mesh-2.4ghz"] == 12
    assert s["graph"]["components"] == 1 and s["graph"]["diameter_hops"] >= 2
    pd = s["graph"]["path_delay_ms"]
    assert 0 < pd["min"] <= pd["median"] <= pd["p95"] <= pd["max"]
    res = cnlab("show", EXAMPLES / "line-3.yaml", "--json")
    assert json.loads(res.stdout)["graph"]["path_delay_ms"]["max"] == 20.0


def test_import_netjson_then_validate_and_show(cnlab, ffwien: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.yaml"
    res = cnlab("import", "netjson", ffwien, "-o", out)
    assert res.returncode == 0, res.stderr
    assert "246 devices, 395 links" in res.stdout and "58 self-loops skipped" in res.stdout
    assert cnlab("validate", out).returncode == 0
    res = cnlab("show", out)
    assert res.returncode == 0
    assert "246 devices, 395 links" in res.stdout and "453 links listed, 58 self-loops skipped" in res.stdout
    s = json.loads(cnlab("show", out, "--json").stdout)
    assert s["devices"]["total"] == 246 and s["provenance"]["links"] == 453
    # It does not overwrite without --force, and leaves nothing half-written on failure.
    again = cnlab("import", "netjson", ffwien, "-o", out)
    assert again.returncode == 2 and "--force" in again.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "NetworkGraph", "nodes": [{"id": "a"}], "links": [{"source": "a"}]}')
    res = cnlab("import", "netjson", broken, "-o", tmp_path / "never.yaml")
    assert res.returncode == 2 and "broken.json:1:" in res.stderr
    assert not (tmp_path / "never.yaml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.json", "t.yaml"]


def test_schema_is_json_schema_of_the_format(cnlab) -> None:
    res = cnlab("schema", "topology")
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert schema["additionalProperties"] is False
    assert {"name", "devices", "links", "import", "federation"} <= set(schema["properties"])
    link = schema["$defs"]["LinkSpec"]
    assert {"between", "delay_ms", "loss_pct", "forward"} <= set(link["properties"])
    assert cnlab("schema", "experiment").returncode == 0
    assert cnlab("schema", "nosuch").returncode == 2


def _kernel_has_netem() -> bool:
    """An independent probe: a netem qdisc on lo in a namespace of the test's own."""
    import os
    import subprocess

    ns = f"cnlab-testnetem-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        return (
            subprocess.run(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                capture_output=True,
            ).returncode
            == 0
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


@pytest.mark.netns
def test_doctor_reports_this_machine_and_the_shaper_it_implies(cnlab) -> None:
    res = cnlab("doctor", "--json")
    report = json.loads(res.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert {
        "privileges",
        "netns",
        "veth",
        "netem",
        "tbf",
        "nftables",
        "cgroups",
        "prometheus",
        "sshd",
        "ansible",
        "chromium",
    } <= set(checks)
    assert checks["netns"]["ok"] and checks["veth"]["ok"] and checks["tbf"]["ok"]
    # netem as the kernel really has it; without it, doctor names the way out (the wire shaper)
    has_netem = _kernel_has_netem()
    assert checks["netem"]["ok"] is has_netem
    if not has_netem:
        assert "wire" in checks["netem"]["fix"]
    assert res.returncode == (0 if report["ok"] else 1)
    human = cnlab("doctor")
    assert "netem" in human.stdout
    assert ("userspace" in human.stdout) is not has_netem  # the shaper line at the end
    import subprocess

    # probe namespaces are named after the probing process: one whose process is gone is left behind
    # (a probe of a test running beside this one may be alive)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    stale = [ns for ns in left if ns.startswith(("cnlab-probe-", "cnlab-testnetem-")) and not _alive(ns)]
    assert stale == []


def _alive(ns: str) -> bool:
    pid = ns.rsplit("-", 1)[1]
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


def test_readme_cli_reference_matches_the_commands() -> None:
    from typer.testing import CliRunner

    from toolkit.cli.main import app

    readme = (REPO / "README.md").read_text()
    assert reference() in readme, "run: python -m toolkit.cli.doc --write README.md"
    runner = CliRunner()
    for full, cmd in commands():  # in this process: one interpreter start per command costs a minute
        res = runner.invoke(app, [*full.split()[1:], "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (full, res.output)
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert opt in res.output, (full, opt)


def test_readme_quick_start_is_the_two_make_commands() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_docs_list_every_profile_and_preset() -> None:
    doc = (REPO / "docs" / "topology.md").read_text()
    for name in list(PROFILES) + list(LINK_PRESETS):
        assert f"| `{name}` |" in doc, name


def test_up_dry_run_takes_routing_from_the_topology_unless_told(cnlab, tmp_path: Path) -> None:
    topo = tmp_path / "r.yaml"
    topo.write_text("name: t\nrouting: babeld\ndevices: {a: {}, b: {}}\nlinks: [{between: [a, b]}]\n")
    res = cnlab("up", topo, "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["routing"] == "babeld"
    res = cnlab("up", topo, "--dry-run", "--json", "--routing", "static")
    assert json.loads(res.stdout)["routing"] == "static"
    assert cnlab("up", topo, "--dry-run", "--routing", "ospf").returncode == 2
