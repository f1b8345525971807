"""Node stop/start on devices deployed with Ansible, through the device's service manager.

One small class per service manager (the role installs the same three): each turns an
operation into the command the device runs. `RemoteNodes` runs them over SSH with the testbed's
host-key policy; it is what `cnlab node stop|start|restart ID NODE` uses for such devices.
"""

from __future__ import annotations

import json
import shlex
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, RunError
from ..targets.ssh import KnownHosts, SshTarget
from . import probe as probing
from .inventory import AnsibleHost, device_paths

OPS = ("stop", "start", "restart")


class ServiceManager:
    def command(self, op: str, host: AnsibleHost) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError


class PidfileService(ServiceManager):
    def command(self, op: str, host: AnsibleHost) -> list[str]:
        return [f"{device_paths(host.root)['p2pvalue_bin_dir']}/p2pvalue-service", op]


class SystemdService(ServiceManager):
    def command(self, op: str, host: AnsibleHost) -> list[str]:
        return ["systemctl", op, "p2pvalue"]


class ProcdService(ServiceManager):
    def command(self, op: str, host: AnsibleHost) -> list[str]:
        return ["/etc/init.d/p2pvalue", op]


class AutoService(ServiceManager):
    """Real devices: the role chose the manager from the device's facts; find what it installed."""

    def command(self, op: str, host: AnsibleHost) -> list[str]:
        pidfile = shlex.join(PidfileService().command(op, host))
        return [
            "sh",
            "-c",
            f"if [ -d /run/systemd/system ] && [ -f /etc/systemd/system/p2pvalue.service ]; then "
            f"exec {shlex.join(SystemdService().command(op, host))}; "
            f"elif [ -x /etc/init.d/p2pvalue ] && [ -z {shlex.quote(host.root)} ]; then "
            f"exec {shlex.join(ProcdService().command(op, host))}; else exec {pidfile}; fi",
        ]


MANAGERS: dict[str, ServiceManager] = {
    "pidfile": PidfileService(),
    "systemd": SystemdService(),
    "procd": ProcdService(),
    "auto": AutoService(),
}


@dataclass
class RemoteNodes:
    hosts: dict[str, AnsibleHost]
    known_hosts: str
    state_dir: Path | None = None  # where the deployer keeps ansible.json (the deployed version)

    def status(self, timeout_s: float = 1.0) -> list[dict[str, Any]]:
        """One row per node (the columns of `cnlab status ID`'s node table): deployed or only
        registered (planned, not yet deployed), and whether it answers its health check now."""
        deployed: dict[str, Any] = {}
        if self.state_dir is not None:
            try:
                deployed = json.loads((self.state_dir / "ansible.json").read_text())
            except (FileNotFoundError, ValueError):
                deployed = {}
        on = set(deployed.get("hosts") or [])
        ok = probing.healthy({n: h.node.health_url for n, h in self.hosts.items() if n in on}, timeout_s=timeout_s)
        rows = []
        for name, h in sorted(self.hosts.items()):
            is_deployed = name in on
            rows.append(
                {
                    "device": name,
                    "domain": h.node.domain,
                    "state": ("started" if name in ok else "down") if is_deployed else "registered",
                    "health": "ok" if name in ok else "down",
                    "pid": None,
                    "version": deployed.get("version") if is_deployed else None,
                    "peers_reachable": None,
                    "peers_configured": len(h.node.trusted_peers),
                    "outbox_depth": None,
                    "address": f"{h.endpoint.user}@{h.endpoint.host}:{h.endpoint.port}",
                    "service_manager": h.service_manager,
                    "error": None,
                }
            )
        return rows

    def _host(self, device: str) -> AnsibleHost:
        try:
            return self.hosts[device]
        except KeyError:
            raise InputError(
                f"no node deployed with Ansible on {device!r} (nodes: {', '.join(sorted(self.hosts))})"
            ) from None

    def healthy(self, device: str, timeout_s: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(self._host(device).node.health_url, timeout=timeout_s) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def run(self, op: str, device: str, timeout_s: float = 60.0) -> None:
        """stop returns when the node exited; start and restart when it answers /health."""
        if op not in OPS:
            raise InputError(
                f"`node {op}` is not available for nodes deployed with Ansible: use "
                f"{', '.join(OPS)} (through the device's service manager)"
            )
        host = self._host(device)
        manager = MANAGERS.get(host.service_manager)
        if manager is None:
            raise RunError(
                f"{device}: service manager {host.service_manager!r} is not known here "
                f"(deploy first; known: {', '.join(MANAGERS)})"
            )
        with SshTarget(host.endpoint, KnownHosts(self.known_hosts)) as t:
            t.run(manager.command(op, host), timeout_s=timeout_s)
        if op == "stop":
            return
        deadline = time.monotonic() + timeout_s
        while not self.healthy(device):
            if time.monotonic() > deadline:
                raise RunError(f"{device}: the node did not answer {host.node.health_url} within {timeout_s:g} s")
            time.sleep(0.1)
