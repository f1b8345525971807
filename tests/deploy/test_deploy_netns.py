"""Federations on real emulated testbeds (root): real namespaces, the wire shaping every link, real
node processes forked by the launcher. A 6-device, two-site topology; each test takes seconds."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from toolkit.testbed import naming

from ..testbed.conftest import CLI, leftovers

pytestmark = pytest.mark.netns

TOPOLOGY = """\
name: fedtest
sites: {west: {}, east: {}}
devices:
  w1: {site: west}
  w2: {site: west}
  w3: {site: west}
  e1: {site: east}
  e2: {site: east}
  e3: {site: east}
links:
  - {between: [w1, w2], delay_ms: 5}
  - {between: [w2, w3], delay_ms: 5}
  - {between: [w3, e3], link: vpn-over-dsl}
  - {between: [e3, e2], delay_ms: 2, loss_pct: 1}
  - {between: [e2, e1], delay_ms: 2}
  - {between: [e1, w1], delay_ms: 20, jitter_ms: 2}
federation:
  accounts: [alice, bob]
  settings:
    federation: {antientropy_interval_s: 2, backoff_initial_s: 0.1, backoff_max_s: 1, request_timeout_s: 3}
"""


def req(url: str, method: str, path: str, body: object = None, token: str | None = None) -> tuple[int, dict]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else {})
    finally:
        conn.close()


def wait_for(pred, timeout_s: float = 30.0, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(interval_s)


@pytest.fixture
def topo_file(tmp_path) -> Path:
    f = tmp_path / "fedtest.yaml"
    f.write_text(TOPOLOGY)
    return f


@pytest.fixture
def federation(topo_file, cli, state_dir):
    """`cnlab up TOPOLOGY --deploy [args]`; yields (testbed id, Deployment); `down` at teardown."""
    from toolkit.deploy.deployment import Deployment

    made = []

    def make(*args: str):
        tid = naming.random_id()
        made.append(tid)
        cp = cli("up", topo_file, "--id", tid, "--deploy", *args)
        assert cp.returncode == 0, cp.stderr
        return tid, Deployment.open(tid)

    yield make
    for tid in made:
        cp = cli("down", tid)
        assert cp.returncode == 0, cp.stderr
        assert leftovers(tid) == []
        assert not (state_dir / tid).exists()


def shared_object(dep, name: str) -> str:
    """alice@w1 creates an object named `name` shared with alice@e1 (across the sites) and writes to it;
    returns its id (the node derives it from the creator and the name)."""
    w1, e1 = dep.nodes["w1"], dep.nodes["e1"]
    tok = dep.accounts("w1")["alice"]
    body = {"id": name, "participants": [f"alice@{e1.domain}"]}
    st, created = req(dep.client_url("w1"), "POST", "/api/objects", body, tok)
    assert st == 201
    oid = created["id"]
    st, _ = req(
        dep.client_url("w1"),
        "POST",
        f"/api/objects/{oid}/ops",
        {
            "ops": [
                {"op": "set", "key": "title", "value": "antennas"},
                {"op": "set", "key": "notes", "type": "text", "value": "from " + w1.domain},
            ]
        },
        tok,
    )
    assert st == 200
    return oid


def view(dep, device: str, oid: str) -> dict | None:
    st, body = req(dep.client_url(device), "GET", f"/api/objects/{oid}", token=dep.accounts(device)["alice"])
    return body if st == 200 else None


def converged(dep, oid: str, a: str = "w1", b: str = "e1") -> bool:
    va, vb = view(dep, a, oid), view(dep, b, oid)
    return bool(va and vb and va["state_hash"] == vb["state_hash"] and vb["data"].get("title"))


def states(dep) -> dict[str, str]:
    return {s.device: s.state for s in dep.status()}


def test_deploy_converge_kill_restart_pause_reboot(federation, cli):
    tid, dep = federation()
    assert dep.mode == "fork"
    status = dep.status()
    assert {s.state for s in status} == {"started"}
    assert all(s.health == "ok" and s.version and s.peers_configured == 5 for s in status)
    # each node's process is in its device's namespace
    w1 = dep.nodes["w1"]
    pid = next(s.pid for s in status if s.device == "w1")
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{w1.netns}").st_ino
    # keys and admin tokens are private
    assert Path(w1.key_path).stat().st_mode & 0o777 == 0o600
    assert Path(w1.admin_token_path).stat().st_mode & 0o777 == 0o600

    plan1 = shared_object(dep, "plan1")
    assert wait_for(lambda: converged(dep, plan1), 20)

    # kill: the status shows the node failed
    cp = cli("node", "kill", tid, "e1")
    assert cp.returncode == 0, cp.stderr
    st = {s.device: s for s in dep.status()}
    assert st["e1"].state == "fail_start" and st["e1"].exit_code == -signal.SIGKILL
    assert st["w1"].state == "started"
    # w1 writes while e1 is down; after the restart e1 catches up
    tok = dep.accounts("w1")["alice"]
    assert (
        req(
            dep.client_url("w1"),
            "POST",
            f"/api/objects/{plan1}/ops",
            {"ops": [{"op": "set", "key": "while_down", "value": 1}]},
            tok,
        )[0]
        == 200
    )
    cp = cli("node", "start", tid, "e1")
    assert cp.returncode == 0, cp.stderr
    assert states(dep)["e1"] == "started"
    assert wait_for(lambda: converged(dep, plan1) and view(dep, "e1", plan1)["data"].get("while_down") == 1, 20)

    # pause / resume: a paused node does not answer; after resume it does
    dep.pause("w2")
    st = {s.device: s for s in dep.status()}
    assert st["w2"].state == "started" and st["w2"].health == "paused"
    with pytest.raises(OSError):
        u = urlparse(dep.client_url("w2"))
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=0.5)
        c.request("GET", "/health")
        c.getresponse()
    dep.resume("w2")
    assert req(dep.client_url("w2"), "GET", "/health")[0] == 200

    # stop is not a failure
    dep.stop("e2")
    assert {s.device: (s.state, s.health) for s in dep.status()}["e2"] == ("deployed", "stopped")
    assert cli("node", "restart", tid, "e2").returncode == 0

    # a device reboot: everything in the namespace stops (a stray process too), the node comes back
    stray = subprocess.Popen(["ip", "netns", "exec", dep.nodes["e3"].netns, "sleep", "300"])
    old = {s.device: s.pid for s in dep.status()}["e3"]
    cp = cli("device", "reboot", tid, "e3")
    assert cp.returncode == 0, cp.stderr
    assert stray.wait(timeout=10) != 0
    st = {s.device: s for s in dep.status()}
    assert st["e3"].state == "started" and st["e3"].pid != old

    # the CLI's status, as scripts read it
    cp = cli("status", tid, "--json")
    assert cp.returncode == 0, cp.stderr
    nodes = json.loads(cp.stdout)["nodes"]
    assert {n["device"]: n["state"] for n in nodes} == {d: "started" for d in dep.nodes}


def test_dense_mode_converges(federation, cli):
    tid, dep = federation("--nodes-per-process", "4")
    assert dep.mode == "dense"
    status = dep.status()
    assert {s.state for s in status} == {"started"}
    assert len({s.pid for s in status}) == 2  # two host processes for six nodes
    # the node's listening sockets live in its device's namespace: reachable on its management
    # address from here, and its federation traffic leaves from its service address
    dense1 = shared_object(dep, "dense1")
    assert wait_for(lambda: converged(dep, dense1), 20)
    assert cli("node", "kill", tid, "e1").returncode == 0
    assert states(dep)["e1"] == "fail_start"
    assert states(dep)["w1"] == "started"
    assert cli("node", "start", tid, "e1").returncode == 0
    assert wait_for(lambda: converged(dep, dense1), 20)

    # pause / resume one node of a shared host: it answers nothing and its peers see it unreachable,
    # while the node beside it in the same process serves; after resume it is healthy and caught up
    assert dep.nodes["e1"].group == dep.nodes["w1"].group
    host_pid = {s.device: s.pid for s in status}["e1"]
    tok = dep.accounts("w1")["alice"]

    def write(key: str) -> None:
        ops = {"ops": [{"op": "set", "key": key, "value": 1}]}
        assert req(dep.client_url("w1"), "POST", f"/api/objects/{dense1}/ops", ops, tok)[0] == 200

    def e1_has(key: str) -> bool:
        return converged(dep, dense1) and view(dep, "e1", dense1)["data"].get(key) == 1

    write("before_pause")  # w1 pushes it to e1: e1 counts as reachable
    assert wait_for(lambda: e1_has("before_pause"), 20)
    reachable = dep.status(["w1"])[0].peers_reachable
    assert reachable
    assert cli("node", "pause", tid, "e1").returncode == 0
    st = {s.device: s for s in dep.status()}
    assert (st["e1"].state, st["e1"].health, st["e1"].process) == ("started", "paused", "paused")
    assert st["w1"].state == "started" and st["w1"].health == "ok"
    with pytest.raises(OSError):  # accepted by the kernel's backlog, never answered
        u = urlparse(dep.client_url("e1"))
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=0.5)
        c.request("GET", "/health")
        c.getresponse()
    write("while_paused")
    # w1's push to e1 goes unanswered (request_timeout_s 3): w1 counts e1 unreachable
    assert wait_for(lambda: dep.status(["w1"])[0].peers_reachable == reachable - 1, 20)
    assert cli("node", "resume", tid, "e1").returncode == 0
    assert req(dep.client_url("e1"), "GET", "/health")[0] == 200
    st = {s.device: s for s in dep.status()}
    assert st["e1"].state == "started" and st["e1"].health == "ok" and st["e1"].pid == host_pid
    assert wait_for(lambda: e1_has("while_paused"), 20)
    assert wait_for(lambda: dep.status(["w1"])[0].peers_reachable == reachable, 20)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_of_deploy_then_down_leaves_nothing(topo_file, cli, state_dir):
    tid = naming.random_id()
    cp = cli("up", topo_file, "--id", tid)
    assert cp.returncode == 0, cp.stderr
    try:
        # a plan mistake after the launcher was started (it imports while the deployer plans) stops it again
        bigger = topo_file.with_name("bigger.yaml")
        bigger.write_text(
            TOPOLOGY.replace("  e3: {site: east}\n", "  e3: {site: east}\n  x9: {site: east}\n").replace(
                "links:\n", "links:\n  - {between: [e3, x9], delay_ms: 1}\n"
            )
        )
        cp = cli("deploy", tid, "--topology", bigger)
        assert cp.returncode == 2 and "not in testbed" in cp.stderr, cp.stderr
        refused = [
            int(r["name"])
            for r in map(json.loads, (state_dir / tid / "resources.jsonl").read_text().splitlines())
            if r.get("role") == "launcher"
        ]
        assert refused and not any(alive(p) for p in refused)
        assert not (state_dir / tid / "federation.json").exists()
        env = {**os.environ, "CNLAB_STATE_DIR": str(state_dir)}
        proc = subprocess.Popen([CLI, "deploy", tid], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sock = state_dir / tid / "launcher.sock"
        assert wait_for(sock.exists, 120, 0.005), "the launcher never started"  # slow only under load
        started = wait_for(
            lambda: any(
                (state_dir / tid / "nodes" / d / "node.log").exists() for d in ("w1", "w2", "w3", "e1", "e2", "e3")
            ),
            120,  # the launcher is up before the plan is made: its first node comes after it
            0.005,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert started
        launcher_pids = [
            int(r["name"])
            for r in map(json.loads, (state_dir / tid / "resources.jsonl").read_text().splitlines())
            if r.get("role") == "launcher" and int(r["name"]) not in refused
        ]
        assert launcher_pids and os.path.exists(f"/proc/{launcher_pids[0]}")  # it outlives deploy
        cp = cli("down", tid)
        assert cp.returncode == 0, cp.stderr
        assert leftovers(tid) == []
        assert not (state_dir / tid).exists()
        assert not any(alive(pid) for pid in launcher_pids)
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    cmd = (p / "cmdline").read_bytes()
                except OSError:
                    continue
                assert str(state_dir / tid).encode() not in cmd, cmd
    finally:  # a failed assertion must not leave the testbed behind
        if (state_dir / tid).exists():
            cli("down", tid)
