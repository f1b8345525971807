"""A deployed federation on a live testbed: its plan, its nodes' status, and their lifecycle.

    dep = deploy(tb)                              # toolkit.deploy.direct, or Deployment.open("tb1")
    dep.client_url("w1")                          # http://<mgmt addr>:8080 (reachable from the root namespace)
    dep.admin_token("w1"); dep.accounts("w1")     # {"user1": token, ...}
    dep.status()                                  # [NodeStatus] in CONFINE's words
    dep.kill("w1"); dep.start("w1")               # each returns when the change took effect
    dep.pause("w1"); dep.resume("w1"); dep.reboot_device("w1")

States (CONFINE's node states): `registered` (planned, files not written), `deployed` (files
written; not running: never started, stopped on request, or still starting), `started` (running;
health says whether it answers), `fail_deploy` (its files could not be written or the node refused
its config), `fail_start` (it exited unasked, or does not answer within START_GRACE_S).
The launcher reaps a dead process within 0.1 s, so a node that dies shows `fail_start` at the next
`status()`.

Everything lives in the testbed's state directory (`federation.json`, `launcher.*`, `nodes/`), so
`Deployment.open` works from any process (the CLI, the experiment runner).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import InputError, RunError
from ..testbed import naming
from ..testbed.state import TestbedState
from . import probe as probing
from .plan import FederationPlan, NodePlan
from .protocol import NodeProc, Request, call

NodeState = Literal["registered", "deployed", "started", "fail_deploy", "fail_start"]
START_GRACE_S = 30.0
EXIT_CONFIG = 78
FEDERATION_FILE = "federation.json"


@dataclass
class NodeStatus:
    device: str
    domain: str
    state: NodeState
    health: str  # ok | starting | paused | stopped | down | unreachable: <why>
    process: str  # never | running | paused | stopped | exited (the launcher's view)
    pid: int | None = None
    exit_code: int | None = None
    version: str | None = None
    peers_reachable: int | None = None
    peers_configured: int | None = None
    outbox_depth: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Deployment:
    """One federation on one testbed."""

    def __init__(self, state: TestbedState, plan: FederationPlan):
        self.state = state
        self.plan = plan
        self.id = plan.testbed_id

    # ---- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, testbed_id: str) -> Deployment:
        state = TestbedState(naming.check_id(testbed_id))
        if not state.exists:
            raise InputError(f"no testbed {testbed_id!r} on this machine (see `cnlab status`)")
        try:
            text = (state.dir / FEDERATION_FILE).read_text()
        except FileNotFoundError:
            raise InputError(f"testbed {testbed_id} has no federation: run `cnlab deploy {testbed_id}`") from None
        return cls(state, FederationPlan.from_json(text))

    @staticmethod
    def exists(testbed_id: str) -> bool:
        return (TestbedState(naming.check_id(testbed_id)).dir / FEDERATION_FILE).exists()

    # ---- what a client needs --------------------------------------------------------------------
    @property
    def nodes(self) -> dict[str, NodePlan]:
        return self.plan.nodes

    def node(self, device: str) -> NodePlan:
        try:
            return self.plan.nodes[device]
        except KeyError:
            raise InputError(
                f"no node on device {device!r} in testbed {self.id} "
                f"(nodes: {', '.join(list(self.plan.nodes)[:8])}"
                f"{', ...' if len(self.plan.nodes) > 8 else ''})"
            ) from None

    def client_url(self, device: str) -> str:
        return self.node(device).client_url

    def metrics_url(self, device: str) -> str:
        return self.node(device).metrics_url + self.plan.metrics_path

    def health_url(self, device: str) -> str:
        return self.node(device).client_url + self.plan.health_path

    def admin_token(self, device: str) -> str:
        return Path(self.node(device).admin_token_path).read_text().strip()

    def accounts(self, device: str) -> dict[str, str]:
        """username -> client token of the accounts the deploy created on the node."""
        path = Path(self.node(device).node_dir) / "accounts.json"
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            return {}

    @property
    def mode(self) -> str:
        return self.plan.mode

    # ---- the launcher ---------------------------------------------------------------------------
    def _call(self, op: str, devices: list[str] | None = None, timeout_s: float = 60.0) -> dict[str, NodeProc]:
        for d in devices or []:
            self.node(d)
        return call(self.plan.launcher_socket, Request(op, list(devices or [])), timeout_s).nodes  # type: ignore[arg-type]

    def processes(self) -> dict[str, NodeProc] | None:
        """The launcher's view of every node, or None when the launcher is not running."""
        try:
            return self._call("status", timeout_s=5.0)
        except RunError:
            return None

    # ---- status ---------------------------------------------------------------------------------
    def status(
        self, devices: list[str] | None = None, *, metrics: bool = True, timeout_s: float = 1.0
    ) -> list[NodeStatus]:
        names = devices or list(self.plan.nodes)
        procs = self.processes()
        failed_deploy: dict[str, str] = (self.state.meta.get("deploy") or {}).get("fail_deploy", {})
        live = [d for d in names if procs and procs.get(d) and procs[d].state == "running"]
        probes = probing.probe(
            {d: (self.health_url(d), self.metrics_url(d) if metrics else None) for d in live}, timeout_s
        )
        out = []
        now = time.time()
        for d in names:
            n = self.plan.nodes[d]
            p = procs.get(d) if procs else None
            st = NodeStatus(
                d,
                n.domain,
                "registered",
                "down",
                p.state if p else "unknown",
                pid=p.pid if p else None,
                exit_code=p.exit_code if p else None,
                error=p.error if p else None,
            )
            if d in failed_deploy:
                st.state, st.error = "fail_deploy", failed_deploy[d]
            elif not Path(n.config_path).exists():
                st.state = "registered"
            elif procs is None:
                st.state, st.health, st.error = "fail_start", "down", "the node launcher is not running"
            elif p is None or p.state == "never":
                st.state, st.health = "deployed", "down"
            elif p.state == "stopped":
                st.state, st.health = "deployed", "stopped"
            elif p.state == "exited":
                st.state = "fail_deploy" if p.exit_code == EXIT_CONFIG else "fail_start"
                st.health = "down"
                st.error = st.error or f"exited with {p.exit_code} (log: {n.log_path})"
            elif p.state == "paused":
                st.state, st.health = "started", "paused"
            else:
                pr = probes[d]
                if pr.healthy:
                    st.state, st.health = "started", "ok"
                    st.version, st.peers_reachable = pr.version, pr.peers_reachable
                    st.peers_configured, st.outbox_depth = pr.peers_configured, pr.outbox_depth
                elif now - p.since < START_GRACE_S:
                    st.state, st.health = "deployed", "starting"
                else:
                    st.state, st.health, st.error = "fail_start", "unreachable", pr.error
            out.append(st)
        return out

    def wait_healthy(self, devices: list[str] | None = None, timeout_s: float = 60.0) -> float:
        """Wait until every given node (default: all) answers its health check; seconds waited.
        RunError naming the nodes that did not, or that exited."""
        pending = set(devices or self.plan.nodes)
        for d in pending:
            self.node(d)
        t0 = time.monotonic()
        while pending:
            ok = probing.healthy({d: self.health_url(d) for d in pending}, timeout_s=1.0)
            pending -= ok
            if not pending:
                break
            procs = self.processes() or {}
            dead = sorted(
                d for d in pending if procs.get(d) is None or procs[d].state in ("exited", "stopped", "never")
            )
            if dead:
                raise RunError(
                    f"node(s) not running: {', '.join(dead[:8])} (see `cnlab status {self.id}`, "
                    f"logs: {self.plan.nodes[dead[0]].log_path})"
                )
            if time.monotonic() - t0 > timeout_s:
                raise RunError(
                    f"{len(pending)} node(s) not healthy after {timeout_s:g} s: {', '.join(sorted(pending)[:8])}"
                )
            time.sleep(0.1)
        return time.monotonic() - t0

    # ---- lifecycle ------------------------------------------------------------------------------
    def stop(self, device: str) -> None:
        """SIGTERM (dense: the node stops in its host); returns after the node exited."""
        self._call("stop", [device])

    def kill(self, device: str) -> None:
        """SIGKILL (dense: the node is dropped from its host at once); returns after it is gone."""
        self._call("kill", [device])

    def start(self, device: str, timeout_s: float = 60.0) -> None:
        """Start the node; returns once it answers its health check."""
        self._call("start", [device])
        self.wait_healthy([device], timeout_s)

    def restart(self, device: str, timeout_s: float = 60.0) -> None:
        self.stop(device)
        self.start(device, timeout_s)

    def pause(self, device: str) -> None:
        """SIGSTOP: the process is frozen (connections stay open, nothing answers). Dense mode: the
        host freezes the node alone (toolkit/deploy/suspend.py); returns once it took effect."""
        self._call("pause", [device])

    def resume(self, device: str) -> None:
        self._call("resume", [device])

    def reboot_device(self, device: str, timeout_s: float = 60.0) -> None:
        """Every process of the device stops (the node first, then anything else running in the
        device's namespace, e.g. started by `cnlab exec`), then its services start again."""
        from ..testbed.executor import kill_all, pids_in_namespaces

        node = self.node(device)
        self._call("stop", [device])
        others = set(pids_in_namespaces([node.netns])) - {os.getpid()}
        if others:
            kill_all(others, grace_s=2.0)
        self.start(device, timeout_s)

    def shutdown(self) -> None:
        """Stop every node and the launcher (`cnlab down` does this and more)."""
        try:
            self._call("shutdown", timeout_s=30.0)
        except RunError:
            return
        pid = (self.state.meta.get("deploy") or {}).get("launcher_pid")
        if pid:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.05)
