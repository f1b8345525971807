"""The topology model: devices, links, sites; YAML natively, NetJSON imported."""

from .model import Device, Direction, Federation, Link, Profile, SshTarget, Topology

__all__ = ["Device", "Direction", "Federation", "Link", "Profile", "SshTarget", "Topology"]

from .loader import load_topology  # noqa: E402

__all__ += ["load_topology"]
