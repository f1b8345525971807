"""The topology model: devices, links, sites; YAML natively, NetJSON imported."""

from typing import Any

from .model import Device, Direction, Federation, Link, Profile, SshTarget, Topology

__all__ = ["Device", "Direction", "Federation", "Link", "Profile", "SshTarget", "Topology"]

__all__ += ["load_any", "load_topology"]


def __getattr__(name: str) -> Any:
    # The loader (pydantic, the schema) is imported on first use: the wire process imports the
    # model but never loads files, and each wire process is ~25 MB smaller without it.
    if name in ("load_topology", "load_any"):
        from . import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
