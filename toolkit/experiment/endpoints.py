"""Where the workload reaches each node: its domain, client API URL (on the management network)
and admin token. Built from a deployment; plain data, so the engine does not depend on how
nodes were started."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    device: str
    domain: str
    url: str  # http://ADDRESS:PORT of the client API
    admin_token: str

    def address(self, user: str) -> str:
        return f"{user}@{self.domain}"


def from_deployment(deployment: Any, devices: list[str] | tuple[str, ...] | None = None) -> dict[str, Endpoint]:
    """Endpoints of a `toolkit.deploy.deployment.Deployment` (issue 9's API: .nodes, .client_url, .admin_token)."""
    names = list(devices) if devices is not None else list(deployment.nodes)
    return {
        d: Endpoint(d, deployment.nodes[d].domain, deployment.client_url(d).rstrip("/"), deployment.admin_token(d))
        for d in names
    }
