"""The userspace link emulator ("the wire"), for kernels without sch_netem.

A package of its own: it imports only the topology model (directions and their JSON codec) and
the error types, so the wire process stays small. Modules: `spec` (the spec file the planner
writes), `shaping` (what a direction does to a frame, pure), `engine` (the data path), `ring`
(mapped receive rings), `stats` (counters, lateness histogram), `control` (protocol and
`WireClient`), `launch` (sharding, `WireProcess`), `linux` (Linux specifics), `process` (the
process itself, `python -m toolkit.wire`). See docs/wire.md.
"""

from toolkit.wire.control import WireClient
from toolkit.wire.launch import WireProcess, expected_load, split_links
from toolkit.wire.spec import LinkSpec, WireSpec, load_spec, parse_spec

__all__ = [
    "LinkSpec",
    "WireClient",
    "WireProcess",
    "WireSpec",
    "expected_load",
    "load_spec",
    "parse_spec",
    "split_links",
]
