"""Deploying over SSH with Ansible onto three emulated devices that run a real sshd (as root).

One testbed is brought up and deployed once for the whole module (Ansible costs ~0.5 s of
controller CPU per task and host); the tests then check it, run Ansible again, upgrade it rolling,
and probe and collect from the same devices.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import paramiko
import pytest

from toolkit.testbed import naming, sshd
from toolkit.testbed.testbed import Testbed
from toolkit.topology.loader import load_topology

pytestmark = [pytest.mark.netns, pytest.mark.ssh]

BIN = Path(sys.executable).parent
CLI = str(BIN / "cnlab")
REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = """name: ansi
devices:
  a1: {deploy: ansible}
  a2: {deploy: ansible}
  a3: {deploy: ansible}
links:
  - {between: [a1, a2], delay_ms: 2}
  - {between: [a2, a3], delay_ms: 2}
"""


def http(
    url: str, method: str = "GET", body: object = None, token: str | None = None, timeout: float = 5
) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


class ProcessWatch:
    """Samples every process's command line (and environment) while a deploy runs."""

    def __init__(self) -> None:
        self.samples: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                for what in ("cmdline", "environ"):
                    try:
                        self.samples.append(Path(f"/proc/{pid}/{what}").read_bytes().decode(errors="replace"))
                    except OSError:
                        pass
            time.sleep(0.1)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    state = tmp_path_factory.mktemp("cnlab-state")
    topo_file = tmp_path_factory.mktemp("topo") / "ansi.yaml"
    topo_file.write_text(TOPOLOGY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNLAB_STATE_DIR", str(state))
        tb = Testbed.up(load_topology(topo_file), testbed_id=naming.random_id())
        try:
            env = {**os.environ, "CNLAB_STATE_DIR": str(state)}

            def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, check=False
                )

            with ProcessWatch() as watch:
                first = cli("deploy", tb.id, "--keep-runner-dir", "--json")
            assert first.returncode == 0, first.stdout + first.stderr
            yield {"tb": tb, "cli": cli, "first": json.loads(first.stdout), "watch": watch, "env": env, "state": state}
        finally:
            Testbed.down_id(tb.id)


def _hosts(tb):
    from toolkit.deploy.ansible_nodes import testbed_hosts

    return {h.name: h for h in testbed_hosts(tb)[0]}


def _secrets(tb) -> list[str]:
    out = []
    for d in ("a1", "a2", "a3"):
        nd = tb.state.dir / "nodes" / d
        out.append((nd / "admin.token").read_text().strip())
        out.append((nd / "signing.key").read_text().split()[1])  # the base64 seed
    return out


def test_deploy_healthy_and_federating(bed):
    tb, first = bed["tb"], bed["first"]
    assert first["status"] == "successful" and first["rolling"] is False
    assert set(first["hosts"]) == {"a1", "a2", "a3"} and all(h["changed"] > 0 for h in first["hosts"].values())
    hosts = _hosts(tb)
    for h in hosts.values():
        assert http(h.node.health_url)[0] == 200
        # installed under the device's own root prefix, run by the pidfile service
        assert Path(h.root, "opt/p2pvalue/venv/bin/p2pvalue-node").exists()
        assert Path(h.root, "run/p2pvalue/p2pvalue.pid").read_text().strip().isdigit()
    # federation: alice@a1 shares an object with bob@a3 (two hops away); bob reads alice's edit on a3
    token = {d: (tb.state.dir / "nodes" / d / "admin.token").read_text().strip() for d in hosts}
    base = {d: f"http://{tb.mgmt_address(d)}:8080" for d in hosts}
    st, alice = http(f"{base['a1']}/api/admin/accounts", "POST", {"username": "alice"}, token["a1"])
    assert st == 201, alice
    st, bob = http(f"{base['a3']}/api/admin/accounts", "POST", {"username": "bob"}, token["a3"])
    assert st == 201, bob
    st, obj = http(f"{base['a1']}/api/objects", "POST", {"participants": [bob["user"]]}, alice["token"])
    assert st == 201, obj
    st, _ = http(
        f"{base['a1']}/api/objects/{obj['id']}/ops",
        "POST",
        {"ops": [{"op": "set", "path": [], "key": "title", "value": "antennas"}]},
        alice["token"],
    )
    assert st == 200
    deadline = time.monotonic() + 60
    seen = None
    while time.monotonic() < deadline:
        st, seen = http(f"{base['a3']}/api/objects/{obj['id']}", token=bob["token"])
        if st == 200 and seen["data"].get("title") == "antennas":
            break
        time.sleep(0.3)
    assert st == 200 and seen["data"]["title"] == "antennas", seen


def test_no_secret_in_runner_artifacts_or_process_list(bed):
    kept = bed["first"]["private_data_dir"]
    assert kept and Path(kept, "artifacts").is_dir()
    assert not Path(kept, "env").exists()  # suppress_env_files
    try:
        blobs = [p.read_bytes().decode(errors="replace") for p in Path(kept).rglob("*") if p.is_file()]
        assert any('"event": "playbook_on_stats"' in b or "playbook_on_stats" in b for b in blobs)
        for secret in _secrets(bed["tb"]):
            assert not [b for b in blobs if secret in b], "a secret is in the runner's private data dir"
            assert not [s for s in bed["watch"].samples if secret in s], "a secret was in the process list"
        assert len(bed["watch"].samples) > 100  # the watch really ran during the deploy
    finally:
        subprocess.run(["rm", "-rf", kept], check=True)


def test_second_run_changes_nothing(bed):
    cp = bed["cli"]("deploy", bed["tb"].id)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "0 changed (already as wanted)" in cp.stdout
    assert "a1" in cp.stdout and "a3" in cp.stdout  # the per-host summary


def test_changed_host_key_is_refused(bed):
    tb = bed["tb"]
    known = Path(sshd.known_hosts(str(tb.state.dir)))
    original = known.read_text()
    addr = tb.mgmt_address("a2")
    impostor = paramiko.RSAKey.generate(1024)
    lines = [
        ln if not ln.startswith(addr + " ") else f"{addr} ssh-ed25519 " + base64.b64encode(_ed25519_blob()).decode()
        for ln in original.splitlines()
    ]
    known.write_text("\n".join(lines) + "\n")
    try:
        cp = bed["cli"]("deploy", tb.id)
        assert cp.returncode == 1
        assert "device a2" in cp.stderr and "host key changed" in cp.stderr, cp.stderr
        assert "nothing deployed" in cp.stderr
    finally:
        known.write_text(original)
    # and a pinned fingerprint that does not match is refused before logging in
    from toolkit.targets.ssh import HostKeyMismatch, KnownHosts, SshEndpoint, SshTarget, fingerprint

    ep = SshEndpoint(
        "a3", tb.mgmt_address("a3"), key_file=sshd.client_key(str(tb.state.dir)), host_key=fingerprint(impostor)
    )
    with pytest.raises(HostKeyMismatch, match="device a3"):
        SshTarget(ep, KnownHosts(known.with_name("pin_test_known_hosts"))).connect()


def _ed25519_blob() -> bytes:
    """The public blob of a random ed25519 key (as an impostor device would present)."""
    m = paramiko.Message()
    m.add_string("ssh-ed25519")
    m.add_string(os.urandom(32))
    return m.asbytes()


def test_inventory_and_plain_ansible_playbook_reproduce_it(bed, tmp_path):
    tb, cli = bed["tb"], bed["cli"]
    hosts = _hosts(tb)
    a3 = hosts["a3"]
    config = Path(a3.root, "etc/p2pvalue/node.yaml")
    wanted = config.read_text()
    inv = tmp_path / "inventory.yml"
    cp = cli("inventory", tb.id, "-o", inv)
    assert cp.returncode == 0, cp.stderr
    # break a3: stop its node and remove its config and venv stamp
    assert (
        subprocess.run(
            [str(Path(a3.root, "opt/p2pvalue/bin/p2pvalue-service")), "stop"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        == "stopped"
    )
    config.unlink()
    assert http(a3.node.health_url, timeout=2)[0] != 200
    cp = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inv), str(REPO / "playbooks" / "site.yml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
        check=False,
        env={**bed["env"], "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-2000:]
    recap = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(a\d)\s+: ok=\d+\s+changed=(\d+)", cp.stdout, re.M)}
    assert recap["a1"] == 0 and recap["a2"] == 0 and recap["a3"] > 0, recap
    assert config.read_text() == wanted
    assert http(a3.node.health_url)[0] == 200


def test_rolling_upgrade_keeps_n_minus_1_healthy(bed):
    tb, cli = bed["tb"], bed["cli"]
    hosts = _hosts(tb)
    label = "up" + tb.id
    cp = cli("image", "build", "p2pvalue", "--local-version", label, "--json")
    assert cp.returncode == 0, cp.stderr
    artifact = json.loads(cp.stdout)
    healthy_counts: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            healthy_counts.append(sum(http(h.node.health_url, timeout=1)[0] == 200 for h in hosts.values()))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        cp = cli("deploy", tb.id, "--artifact", artifact["path"], "--json")
    finally:
        stop.set()
        sampler.join()
        Path(artifact["path"]).unlink(missing_ok=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    result = json.loads(cp.stdout)
    assert result["rolling"] is True and result["playbook"] == "upgrade.yml"
    assert result["previous_version"] == "0.1.0" and result["version"] == f"0.1.0+{label}"
    assert len(healthy_counts) > 20
    assert min(healthy_counts) >= len(hosts) - 1, healthy_counts
    assert healthy_counts.count(len(hosts) - 1) > 0  # nodes really restarted, one at a time
    for h in hosts.values():
        st, text = http(f"http://{h.endpoint.host}:9108/metrics")
        assert st == 200 and f'version="0.1.0+{label}"' in text


def test_node_stop_start_through_the_service_manager(bed):
    tb, cli = bed["tb"], bed["cli"]
    a2 = _hosts(tb)["a2"]
    cp = cli("node", "stop", tb.id, "a2")
    assert cp.returncode == 0, cp.stderr
    assert http(a2.node.health_url, timeout=2)[0] != 200
    assert not Path(a2.root, "run/p2pvalue/p2pvalue.pid").exists()
    cp = cli("node", "start", tb.id, "a2")
    assert cp.returncode == 0, cp.stderr
    assert http(a2.node.health_url)[0] == 200
    cp = cli("node", "pause", tb.id, "a2")
    assert cp.returncode == 2 and "not available for nodes deployed with Ansible" in cp.stderr


def test_devices_probe_and_collect(bed, tmp_path):
    tb, cli = bed["tb"], bed["cli"]
    cp = cli("devices", "probe", tb.id, "--json")
    assert cp.returncode == 0, cp.stderr
    facts = {f["device"]: f for f in json.loads(cp.stdout)}
    assert set(facts) == {"a1", "a2", "a3"}
    for f in facts.values():
        assert f["arch"] == os.uname().machine and f["kernel"] == os.uname().release
        assert f["python"].startswith("3.") and f["memory_mb"] > 0 and f["disk_free_mb"] > 0
        assert f["netem"] in ("yes", "no") and not f["error"]
    out = tmp_path / "collected"
    cp = cli("collect", tb.id, "--out", out)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    for d in ("a1", "a2", "a3"):
        assert "ready" in (out / d / "p2pvalue.log").read_text()
        db = sqlite3.connect(out / d / "node.sqlite3")
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
        db.close()
        assert "updates" in tables or "snapshots" in tables, tables
