"""Federations of node images on testbeds: the pure plan (`plan`), the direct deployer with its fork
launcher (`direct`, `launcher`, `dense`), and a live deployment's status and lifecycle
(`deployment`). See docs/deploy.md."""

from __future__ import annotations

from typing import Any

__all__ = ["Deployment", "NodeStatus", "deploy", "plan_federation", "FederationPlan", "NodePlan"]


def __getattr__(name: str) -> Any:
    # imported on first use: the launcher process imports only what it needs before forking
    if name in ("Deployment", "NodeStatus"):
        from . import deployment

        return getattr(deployment, name)
    if name == "deploy":
        from .direct import deploy

        return deploy
    if name in ("plan_federation", "FederationPlan", "NodePlan"):
        from . import plan

        return getattr(plan, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
