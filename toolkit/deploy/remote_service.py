"""Node stop/start on devices deployed with Ansible, through the device's service manager.

One small class per service manager (the role installs the same three): each turns an
operation into the command the device runs. `RemoteNodes` runs them over SSH with the testbed's
host-key policy; it is what `cnlab node stop|start|restart ID NODE` uses for such devices.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass

from ..errors import InputError, RunError
from ..targets.ssh import KnownHosts, SshTarget
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


MANAGERS: dict[str, ServiceManager] = {
    "pidfile": PidfileService(),
    "systemd": SystemdService(),
    "procd": ProcdService(),
}


@dataclass
class RemoteNodes:
    hosts: dict[str, AnsibleHost]
    known_hosts: str

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
