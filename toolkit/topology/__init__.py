"""The topology model: devices, links, sites; YAML natively, NetJSON imported.

The loader (pydantic, the schema) is `toolkit.topology.loader` (`load_topology`, `load_any`) and is
not imported here: the wire process imports the model but never loads files, and each wire process
is ~25 MB smaller without it."""

from .model import Device, Direction, Federation, Link, Profile, SshTarget, Topology

__all__ = ["Device", "Direction", "Federation", "Link", "Profile", "SshTarget", "Topology"]
