"""A remote testbed of real devices (kind: ssh), end to end, as root: `cnlab up`, an experiment
(`cnlab run --keep`: the Ansible deploy, a workload with a partition, a heal and a node restart
over SSH, checks, the nodes' logs), `status`, Prometheus scraping the devices' nodes, link faults
(nft over SSH) and `down`.

The stand-in for hardware: an emulated testbed whose `deploy: ansible` devices run a real sshd on
their management addresses. A second topology names those devices as `kind: ssh` (address, the
testbed's client key, a pinned host key for one of them, a root prefix each), and everything
else goes through cnlab's remote path exactly as it would against real devices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from toolkit.experiment.rundir import FILES
from toolkit.images.manifest import load_manifest
from toolkit.testbed import naming, sshd
from toolkit.testbed.testbed import Testbed
from toolkit.topology.loader import load_topology

pytestmark = [pytest.mark.netns, pytest.mark.ssh]

CLI = str(Path(sys.executable).parent / "cnlab")
REPO = Path(__file__).resolve().parents[2]
SHAPED = """name: shaped
topology: {topology}
duration_s: 10
workload: {{model: constant, rate_per_s: 1}}
timeline:
  - {{name: cut, at_s: 1, partition: {{groups: [r1]}}}}
  - {{name: slow, at_s: 2, link: {{between: [r1, r2], set: {{delay_ms: 20}}}}}}
"""
STAND_IN = """name: standin
allow_partitioned: true
devices:
  a1: {deploy: ansible}
  a2: {deploy: ansible}
links: []
"""


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def fingerprint(pub: Path) -> str:
    cp = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True)
    return cp.stdout.split()[1]


def can_connect(tb: Testbed, device: str, addr: str, port: int) -> bool:
    """A TCP connect from inside an emulated device (its namespace) to addr:port."""
    code = f"import socket; socket.create_connection(({addr!r}, {port}), timeout=2).close()"
    return tb.exec(device, ["python3", "-c", code]).returncode == 0


def nft_tables(tb: Testbed, device: str) -> str:
    return tb.exec(device, ["nft", "list", "tables"]).stdout


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    state = tmp_path_factory.mktemp("cnlab-state")
    xdg = tmp_path_factory.mktemp("xdg")
    topo_file = tmp_path_factory.mktemp("topo") / "standin.yaml"
    topo_file.write_text(STAND_IN)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNLAB_STATE_DIR", str(state))
        tb = Testbed.up(load_topology(topo_file), testbed_id=naming.random_id())
        try:
            yield tb, {**os.environ, "CNLAB_STATE_DIR": str(state), "XDG_STATE_HOME": str(xdg)}, xdg
        finally:
            Testbed.down_id(tb.id)


def scraped_up(url: str) -> set[str]:
    """Devices whose node target Prometheus scrapes successfully."""
    q = urllib.parse.quote('up{job="p2pvalue"} == 1')
    with urllib.request.urlopen(f"{url}/api/v1/query?query={q}", timeout=5) as r:
        return {x["metric"]["device"] for x in json.load(r)["data"]["result"]}


def exited(pid: int) -> bool:
    """Gone, or a zombie its new parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@pytest.mark.prometheus
def test_remote_testbed_up_deploy_status_faults_down(stand_in, tmp_path):
    tb, env, xdg = stand_in
    sdir = str(tb.state.dir)
    key = sshd.client_key(sdir)
    pin = fingerprint(Path(sshd.SshdPaths(sshd.ssh_dir(sdir), "a1").host_key + ".pub"))
    roots = {r: tmp_path / "roots" / r for r in ("r1", "r2")}
    topo = tmp_path / "fleet.yaml"
    topo.write_text(
        f"""name: fleet
devices:
  r1: {{kind: ssh, host: {tb.mgmt_address("a1")}, key: {key}, host_key: "{pin}", root: {roots["r1"]}}}
  r2: {{kind: ssh, host: {tb.mgmt_address("a2")}, key: {key}, root: {roots["r2"]}}}
links:
  - {{between: [r1, r2]}}
"""
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=900, check=False)

    rid = naming.random_id()
    state_dir = Path(env["CNLAB_STATE_DIR"]) / rid

    def ours() -> list[str]:  # namespaces named for this testbed (other sessions make their own)
        return [n for n in os.listdir("/run/netns") if n.startswith(f"cn{rid}")]

    up = cli("up", "--id", rid, str(topo))
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        # up: state only (no namespace, no process), host keys learned into the fleet's known_hosts
        assert ours() == []
        meta = json.loads((state_dir / "meta.json").read_text())
        assert meta["kind"] == "remote" and meta["phase"] == "up" and meta["shaper"] == "ssh"
        caps = json.loads((state_dir / "devices.json").read_text())
        assert caps["r1"]["nft"] is True and caps["r1"]["tc"] is True and caps["r1"]["netem"] == "no"  # this kernel
        known = (xdg / "cnlab" / "fleets" / "fleet" / "known_hosts").read_text()
        assert tb.mgmt_address("a1") in known and tb.mgmt_address("a2") in known

        st = cli("status", rid, "--json")
        assert st.returncode == 0, st.stderr
        info = json.loads(st.stdout)
        assert info["kind"] == "remote" and [n["state"] for n in info["nodes"]] == ["registered", "registered"]
    finally:
        first_down = cli("down", rid)
    assert first_down.returncode == 0, first_down.stderr
    assert not state_dir.exists()

    # an experiment asking for link shaping, which needs netem on the devices (this kernel has
    # none): refused once `up` probed them, before any deploy, at the event's line; nothing left
    runs = tmp_path / "runs"
    shaped = tmp_path / "shaped.yaml"
    shaped.write_text(SHAPED.format(topology=topo))
    refused = cli("run", str(shaped), "--runs-dir", str(runs), "--id", rid)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (
        f"{shaped}:7:5: event 'slow': link r1~r2 cannot be shaped (delay, jitter, loss, rate): "
        "device r1 lacks the netem qdisc" in refused.stderr
    ), refused.stderr
    assert not state_dir.exists() and not list(runs.glob("*"))
    assert not [p for r in roots.values() if r.exists() for p in r.rglob("*") if p.is_file()]

    # the shipped example experiment on these devices: up, the Ansible deploy, a workload with a
    # partition (nft over SSH), a heal and a node restart (the service manager), checks, logs;
    # --keep leaves the testbed and its nodes for the checks below
    experiment = tmp_path / "remote-example.yaml"
    shipped = (REPO / "experiments" / "remote-example.yaml").read_text()
    assert "topology: topologies/fleet-example.yaml" in shipped
    experiment.write_text(shipped.replace("topologies/fleet-example.yaml", str(topo)))
    run = cli("run", str(experiment), "--keep", "--runs-dir", str(runs), "--id", rid)
    try:
        (run_dir,) = runs.iterdir()
        summary = json.loads((run_dir / "summary.json").read_text())
        assert run.returncode == 0, run.stdout + run.stderr + json.dumps(summary)[:3000]
        for name in FILES:
            assert (run_dir / name).stat().st_size > 0, name
        assert summary["verdict"] == "pass" and summary["lost_updates"] == 0 and summary["diverged_updates"] == 0
        assert summary["acknowledged_updates"] > 20
        assert summary["convergence"][0]["event"] == "heal" and summary["convergence"][0]["converged_s"] is not None
        checks = json.loads((run_dir / "checks.json").read_text())
        assert len(checks) == 4 and all(c["verdict"] == "pass" for c in checks)
        timeline = [json.loads(x) for x in (run_dir / "timeline.jsonl").read_text().splitlines()]
        assert [(e["name"], e["ok"]) for e in timeline] == [("cut", True), ("heal", True), ("bounce", True)]
        assert timeline[0]["groups"] == [["r1"], ["r2"]] and timeline[0]["islands"] == [["r1"], ["r2"]]
        # the partition was real: updates made during it reached the other side only after the heal
        assert summary["propagation_partitioned_samples"] > 0
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["platform"] == "remote" and manifest["shaper"] == "ssh" and manifest["deploy_mode"] == "ansible"
        assert manifest["kept_testbed"] == rid
        for device in ("r1", "r2"):  # fetched over SSH as `cnlab collect` does
            got = {p.name for p in (run_dir / "nodes" / device).iterdir()}
            assert {"p2pvalue.log", "node.sqlite3", "node.yaml", "node.json"} <= got, got
        assert "restarting" not in (run_dir / "nodes" / "r2" / "p2pvalue.log").read_text()  # stopped, not crashed
        assert "cnlab_faults" not in nft_tables(tb, "a1")  # healed

        # the run deployed with the Ansible roles over SSH, into each device's root prefix, as
        # `cnlab deploy` does (its record gives `status` the version)
        for r in roots.values():
            assert (r / "opt/p2pvalue/venv/bin/p2pvalue-node").exists()
        st = json.loads(cli("status", rid, "--json").stdout)
        nodes = {n["device"]: n for n in st["nodes"]}
        assert {d: (n["state"], n["health"]) for d, n in nodes.items()} == {
            "r1": ("started", "ok"),
            "r2": ("started", "ok"),
        }
        assert nodes["r1"]["version"] and nodes["r1"]["address"] == f"root@{tb.mgmt_address('a1')}:22"
        table = cli("status", rid)
        assert "r1" in table.stdout and "started" in table.stdout
        # the run left its Prometheus up (--keep); started again from the CLI it finds the nodes
        assert cli("monitor", "stop", rid).returncode == 0
        # Prometheus on the controller scrapes the devices' nodes over their addresses
        mon = cli("monitor", "start", rid, "--json")
        assert mon.returncode == 0, mon.stdout + mon.stderr
        mon_info = json.loads(mon.stdout)
        assert mon_info["targets"] == 2
        assert wait_for(lambda: scraped_up(mon_info["url"]) == {"r1", "r2"}, 60), scraped_up(mon_info["url"])
        # the inventory of a remote testbed: the devices' own addresses, roots and known_hosts
        inv = cli("inventory", rid)
        assert inv.returncode == 0, inv.stderr
        assert f"ansible_host: {tb.mgmt_address('a1')}" in inv.stdout
        assert f"p2pvalue_root: {roots['r1']}" in inv.stdout and "fleets/fleet/known_hosts" in inv.stdout
        probe = cli("devices", "probe", rid, "--json")
        assert probe.returncode == 0, probe.stderr
        assert {f["device"]: f["nft"] for f in json.loads(probe.stdout)} == {"r1": "yes", "r2": "yes"}

        # faults: link down is nft on both devices, over SSH; federation traffic between them stops
        fed_port = load_manifest("p2pvalue").ports["federation"].default
        a2 = tb.mgmt_address("a2")
        assert can_connect(tb, "a1", a2, fed_port)
        down = cli("link", "down", rid, "r1", "r2")
        assert down.returncode == 0, down.stderr
        assert "cnlab_faults" in nft_tables(tb, "a1") and "cnlab_faults" in nft_tables(tb, "a2")
        assert not can_connect(tb, "a1", a2, fed_port)
        assert healthy(f"http://{a2}:8080/health")  # the management path (controller -> device) stays
        up_again = cli("link", "up", rid, "r1", "r2")
        assert up_again.returncode == 0, up_again.stderr
        assert can_connect(tb, "a1", a2, fed_port)
        assert "cnlab_faults" not in nft_tables(tb, "a1")
        # shaping needs netem, which this kernel lacks: refused before anything changes, exit 2
        shape = cli("link", "set", rid, "r1", "r2", "--delay-ms", "10")
        assert shape.returncode == 2, shape.stdout + shape.stderr
        assert "device r1 lacks the netem qdisc" in shape.stderr
        assert "htb" not in tb.exec("a1", ["tc", "qdisc", "show"]).stdout
        # node stop/start through the service manager the role chose
        stop = cli("node", "stop", rid, "r2")
        assert stop.returncode == 0, stop.stderr
        assert not healthy(f"http://{a2}:8080/health")
        start = cli("node", "start", rid, "r2")
        assert start.returncode == 0, start.stderr
        assert healthy(f"http://{a2}:8080/health")

        # leave a fault in place: `down` must undo it too
        assert cli("link", "down", rid, "r1", "r2").returncode == 0
    finally:
        gone = cli("down", rid)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    # nothing left: no state, no node, no file of it under the roots, no nft table on the devices
    assert not state_dir.exists()
    assert not healthy(f"http://{tb.mgmt_address('a1')}:8080/health")
    for r in roots.values():
        assert [p for p in r.rglob("*") if p.is_file()] == []
    assert "cnlab_faults" not in nft_tables(tb, "a1") and "cnlab_faults" not in nft_tables(tb, "a2")
    assert ours() == []
    assert wait_for(lambda: exited(mon_info["pid"]), 10)  # down stopped its Prometheus too


def test_mixed_topology_is_refused(stand_in, tmp_path):
    _tb, env, _xdg = stand_in
    topo = tmp_path / "mixed.yaml"
    topo.write_text(
        "name: mixed\ndevices:\n  e1: {}\n  r1: {kind: ssh, host: 198.18.255.254}\nlinks:\n  - {between: [e1, r1]}\n"
    )
    cp = subprocess.run([CLI, "up", str(topo)], capture_output=True, text=True, env=env, check=False)
    assert cp.returncode == 2 and "mixes emulated and ssh devices" in cp.stderr
