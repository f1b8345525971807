"""The direct deployer: a federation onto a live emulated testbed, through the fork launcher.

    deploy(testbed) -> Deployment

1. keys: one ed25519 key per node in its directory under the state dir (0600; the image's
   `keys.ensure` hook keeps an existing key, so a second deploy reuses them);
2. plan (pure, `plan.plan_federation`), written to `federation.json`;
3. files: per node `node.yaml`, `admin.token` (0600, random), `data/`;
4. the launcher (`python -m toolkit.deploy.launcher`), started through the local target before the
   plan (it imports the node stack meanwhile) and given the planned nodes with a `load` request;
   it journals itself and its children, so `cnlab down` removes them after any crash;
5. nodes start in windows of at most START_WINDOW at a time (bounded concurrency: each start-up
   costs CPU), each window refilled as nodes turn healthy over the management network;
6. accounts from the federation block, created over each node's admin API; tokens in
   `nodes/<device>/accounts.json` (0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, RunError
from ..images.manifest import ImageManifest, load_manifest
from ..targets.local import LocalTarget
from ..topology.model import Federation, Topology
from . import probe as probing
from .deployment import FEDERATION_FILE, Deployment
from .plan import FederationPlan, key_path, launcher_files, plan_federation
from .protocol import LaunchNode, LaunchSpec, Request, call

if TYPE_CHECKING:
    from ..testbed.testbed import Testbed

Progress = Callable[[str, int, int], None]  # (what, done, total)
START_WINDOW = 64
CHECK_EVERY_S = 0.5  # how often start_nodes asks the launcher whether a starting node exited
LAUNCHER_READY_S = 30.0


def default_federation(testbed: Testbed, image: str = "p2pvalue") -> Federation:
    """Every device, trust all, the topology's name as domain suffix."""
    from ..topology.names import sanitize

    return Federation(image, tuple(testbed.plan.devices), domain_suffix=sanitize(testbed.plan.topology))


BLOCK_FILE = "federation-block.json"


def remember_federation(testbed: Testbed, topology: Topology) -> None:
    """Keep the topology's federation block in the state dir, for a later `cnlab deploy ID`."""
    if topology.federation is not None:
        from dataclasses import asdict

        testbed.state.write(BLOCK_FILE, asdict(topology.federation))


def remembered_federation(testbed: Testbed) -> Federation | None:
    raw = testbed.state.read(BLOCK_FILE)
    if not isinstance(raw, dict):
        return None
    return Federation(
        **{
            **raw,
            "devices": tuple(raw["devices"]),
            "accounts": tuple(raw["accounts"]),
            "trust_pairs": tuple(tuple(p) for p in raw["trust_pairs"]),
        }
    )


def topology_stub(testbed: Testbed, federation: Federation) -> Topology:
    """The planner reads only the topology's name and federation; the testbed plan has the rest."""
    return Topology(name=testbed.plan.topology, devices={}, links=(), federation=federation)


def ensure_keys(manifest: ImageManifest, state_dir: str, devices: list[str]) -> dict[str, str]:
    """device -> public key; creates missing key files (0600) through the image's hook."""
    return {d: manifest.ensure_key(key_path(state_dir, d)) for d in devices}


def resolve_federation(
    testbed: Testbed, *, topology: Topology | None = None, federation: Federation | None = None
) -> tuple[Federation, ImageManifest]:
    """The federation to deploy (given, the topology's block, the one `cnlab up` kept, or every
    device trusting every other) and its image's manifest."""
    fed = (
        federation
        or (topology.federation if topology else None)
        or remembered_federation(testbed)
        or default_federation(testbed)
    )
    return fed, load_manifest(fed.image)


def plan_for(
    testbed: Testbed,
    *,
    topology: Topology | None = None,
    nodes_per_process: int | None = None,
    federation: Federation | None = None,
) -> tuple[FederationPlan, ImageManifest]:
    """Keys (created if missing) and the pure plan; what `--dry-run` prints."""
    fed, manifest = resolve_federation(testbed, topology=topology, federation=federation)
    state_dir = str(testbed.state.dir)
    keys = ensure_keys(manifest, state_dir, list(fed.devices))
    topo = topology or topology_stub(testbed, fed)
    plan = plan_federation(
        topo,
        testbed.plan,
        manifest,
        state_dir=state_dir,
        keys=keys,
        nodes_per_process=nodes_per_process,
        federation=fed,
    )
    return plan, manifest


def launcher_base(
    testbed_id: str, state_dir: str, manifest: ImageManifest, nodes_per_process: int | None
) -> LaunchSpec:
    """The launcher's spec without nodes: what it needs to start (and import the node stack)
    before the plan exists."""
    if not manifest.serve_hook or not manifest.load_config_hook:
        raise InputError(
            f"image {manifest.name}: image.yaml has no launch hooks (launch.serve, "
            "launch.load_config): the fork launcher cannot run it"
        )
    if nodes_per_process and not manifest.start_hook:
        raise InputError(f"image {manifest.name}: image.yaml has no launch.start hook: no dense mode")
    return LaunchSpec(
        testbed_id=testbed_id,
        state_dir=state_dir,
        mode="dense" if nodes_per_process else "fork",
        socket_path=launcher_files(state_dir)["launcher_socket"],
        preload=list(manifest.launch_preload),
        load_config=manifest.load_config_hook,
        serve=manifest.serve_hook,
        start=manifest.start_hook,
    )


def launch_spec(plan: FederationPlan, manifest: ImageManifest) -> LaunchSpec:
    spec = launcher_base(plan.testbed_id, plan.state_dir, manifest, plan.nodes_per_process)
    spec.nodes = {
        d: LaunchNode(d, n.netns, n.cgroup_tasks, n.config_path, n.log_path, n.group, n.listen)
        for d, n in plan.nodes.items()
    }
    return spec


def write_node_files(plan: FederationPlan, target: LocalTarget) -> dict[str, str]:
    """Config, admin token and data dir of every node; returns device -> error for failures."""
    failed: dict[str, str] = {}
    for d, n in plan.nodes.items():
        try:
            Path(n.data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
            if not Path(n.admin_token_path).exists():
                target.put_file(n.admin_token_path, (secrets.token_urlsafe(24) + "\n").encode(), 0o600)
            target.put_file(n.config_path, n.config_text.encode(), 0o640)
        except (OSError, RunError) as e:
            failed[d] = str(e)
    return failed


def spawn_launcher(testbed: Testbed, spec: LaunchSpec, target: LocalTarget) -> int:
    """Start the launcher process (through the local target) and journal it; does not wait."""
    from ..testbed.executor import process_record

    files = launcher_files(spec.state_dir)
    target.put_file(files["launcher_spec"], spec.to_json().encode(), 0o600)
    repo = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": repo + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    pid = target.start(
        [sys.executable, "-m", "toolkit.deploy.launcher", files["launcher_spec"]],
        log_path=files["launcher_log"],
        env=env,
    )
    # stop_first: `down` stops the launcher (and so its nodes, cleanly) before it takes the network
    # away; the launcher records itself too, in case this process dies before the line below
    testbed.state.record([{**process_record(pid, "launcher"), "stop_first": True}])
    return pid


def wait_launcher(pid: int, plan: FederationPlan) -> None:
    """Until the launcher answers on its control socket; RunError if it exits or takes too long."""
    deadline = time.monotonic() + LAUNCHER_READY_S
    while True:
        try:
            call(plan.launcher_socket, Request("status"), timeout_s=5)
            return
        except RunError:
            pass
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            log = Path(plan.launcher_log).read_text()[-2000:] if Path(plan.launcher_log).exists() else ""
            raise RunError(f"the node launcher exited at start: {log.strip()}")
        if time.monotonic() > deadline:
            raise RunError(f"the node launcher did not open {plan.launcher_socket} within {LAUNCHER_READY_S:g} s")
        time.sleep(0.02)


def end_launcher(pid: int) -> None:
    """Stop a launcher that has no nodes yet (the plan failed after it was started)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            if not os.path.exists(f"/proc/{pid}"):
                return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def start_nodes(dep: Deployment, devices: list[str], progress: Progress, timeout_s: float) -> dict[str, str]:
    """Start nodes, at most START_WINDOW starting at once; device -> error of those that failed."""
    waiting = list(devices)
    starting: dict[str, float] = {}
    failed: dict[str, str] = {}
    done = 0
    checked = 0.0
    total = len(devices)
    progress("starting nodes", 0, total)
    window = START_WINDOW if dep.plan.mode == "fork" else 4 * START_WINDOW  # dense: no process to fork
    while waiting or starting:
        room = window - len(starting)
        if room > 0 and waiting:
            batch, waiting = waiting[:room], waiting[room:]
            procs = call(dep.plan.launcher_socket, Request("start", batch), timeout_s=120).nodes
            now = time.monotonic()
            for d in batch:
                if procs[d].state == "running":
                    starting[d] = now
                else:
                    failed[d] = procs[d].error or f"exited with {procs[d].exit_code}"
        # a cheap scan for nodes that listen; only those get the HTTP health check
        urls = {d: dep.health_url(d) for d in starting}
        ok = probing.healthy({d: urls[d] for d in probing.listening(urls)}, timeout_s=1.0)
        for d in ok:
            del starting[d]
        done += len(ok)
        now = time.monotonic()
        if starting and now - checked >= CHECK_EVERY_S:  # exits and time-outs: rare, so not every round
            checked = now
            procs = call(dep.plan.launcher_socket, Request("status", list(starting)), timeout_s=60).nodes
            for d in list(starting):
                p = procs.get(d)
                if p is None or p.state != "running":
                    failed[d] = (
                        p.error if p else None
                    ) or f"exited with {p.exit_code if p else '?'} (log: {dep.nodes[d].log_path})"
                    del starting[d]
                elif now - starting[d] > timeout_s:
                    failed[d] = f"not healthy after {timeout_s:g} s"
                    del starting[d]
        progress("starting nodes", done, total)
        if starting and not ok:
            time.sleep(0.05)
    return failed


def create_accounts(dep: Deployment, devices: list[str]) -> dict[str, str]:
    """The federation's accounts on every node; device -> error for nodes where it failed."""
    reqs = []
    for d in devices:
        for user in dep.nodes[d].accounts:
            reqs.append((d, dep.client_url(d) + "/api/admin/accounts", {"username": user}, dep.admin_token(d)))
    if not reqs:
        return {}
    results = asyncio.run(probing.post_json_many(reqs))
    tokens: dict[str, dict[str, str]] = {}
    failed: dict[str, str] = {}
    for (d, _url, body, _tok), (status, data) in zip(reqs, results, strict=True):
        if status == 201 and "token" in data:
            tokens.setdefault(d, {})[body["username"]] = data["token"]
        else:
            failed[d] = f"creating account {body['username']} answered {status}: {data.get('error')}"
    target = LocalTarget()
    for d, accts in tokens.items():
        target.put_file(f"{dep.nodes[d].node_dir}/accounts.json", json.dumps(accts, indent=1).encode(), 0o600)
    return failed


def deploy(
    testbed: Testbed,
    *,
    nodes_per_process: int | None = None,
    progress: Progress | None = None,
    topology: Topology | None = None,
    federation: Federation | None = None,
    timeout_s: float = 120.0,
) -> Deployment:
    """Deploy the federation (the topology's block, or every device trusting every other) onto a
    live testbed and wait until every node is healthy. RunError names the nodes that failed; the
    nodes that came up keep running (`cnlab status` shows the rest as fail_*)."""
    say = progress or (lambda what, done, total: None)
    state = testbed.state
    if testbed.plan.kind == "remote":
        raise InputError(
            f"testbed {testbed.id} is remote (real devices): its nodes are deployed with Ansible "
            f"(`cnlab deploy {testbed.id}`), not started directly"
        )
    if (state.dir / FEDERATION_FILE).exists():
        raise InputError(
            f"testbed {testbed.id} already has a federation (`cnlab status {testbed.id}`); "
            f"`cnlab down {testbed.id}` removes it with the testbed"
        )
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str, since: list[float] = [t0]) -> None:  # noqa: B006 - a closure's clock
        now = time.monotonic()
        timings[name] = round(now - since[0], 3)
        since[0] = now

    target = LocalTarget()
    fed, manifest = resolve_federation(testbed, topology=topology, federation=federation)
    # the launcher imports the node stack (~0.5 s of one core) while this process plans on the other
    pid = spawn_launcher(testbed, launcher_base(testbed.id, str(state.dir), manifest, nodes_per_process), target)
    say("keys and plan", 0, 1)
    try:
        plan, _ = plan_for(testbed, topology=topology, nodes_per_process=nodes_per_process, federation=fed)
        spec = launch_spec(plan, manifest)
    except BaseException:
        end_launcher(pid)
        raise
    lap("keys and plan")
    say("writing node files", 0, 1)
    failed = write_node_files(plan, target)
    base = {
        "mode": plan.mode,
        "nodes_per_process": nodes_per_process,
        "image": plan.image,
        "nodes": len(plan.nodes),
        "fail_deploy": dict(failed),
    }
    state.update_meta(deploy={**base, "phase": "deploying"})
    state.write_text(FEDERATION_FILE, plan.to_json())
    target.put_file(plan.launcher_spec, spec.to_json().encode(), 0o600)
    lap("node files")
    say("starting the launcher", 0, 1)
    wait_launcher(pid, plan)
    call(plan.launcher_socket, Request("load"), timeout_s=30)
    lap("launcher ready")
    dep = Deployment(state, plan)
    failed.update(start_nodes(dep, [d for d in plan.nodes if d not in failed], say, timeout_s))
    lap("nodes healthy")
    healthy_s = time.monotonic() - t0
    say("creating accounts", 0, 1)
    failed.update(create_accounts(dep, [d for d in plan.nodes if d not in failed]))
    lap("accounts")
    state.update_meta(
        deploy={
            **base,
            "phase": "deployed" if not failed else "partly deployed",
            "launcher_pid": pid,
            "healthy_s": round(healthy_s, 2),
            "deploy_s": round(time.monotonic() - t0, 2),
            "timings": timings,
            "errors": failed,
        }
    )
    if failed:
        shown = "; ".join(f"{d}: {e}" for d, e in list(failed.items())[:5])
        raise RunError(f"{len(failed)} of {len(plan.nodes)} nodes failed: {shown}")
    return dep
