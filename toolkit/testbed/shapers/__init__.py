"""Link shapers: how a testbed makes its links behave (delay, jitter, loss, rate, up/down).

One strategy per kind, behind `Shaper` (base.py): `netem` (the kernel's qdiscs), `wire` (the
userspace link emulator, toolkit.wire), `none` (plain veths, only up/down) and `ssh` (real devices
of remote testbeds: nft and tc netem over SSH). The planner asks the chosen shaper for its part of the plan; the testbed asks it to change a link at
run time and for per-link statistics. Nothing else looks at the shaper's name.
"""

from __future__ import annotations

from ...errors import InputError
from .base import Shaper
from .netem import NetemShaper
from .none import NoShaper
from .ssh import SshShaper
from .wire import WireShaper

SHAPERS: dict[str, Shaper] = {s.name: s for s in (NetemShaper(), WireShaper(), NoShaper(), SshShaper())}


def shaper_for(name: str) -> Shaper:
    try:
        return SHAPERS[name]
    except KeyError:
        raise InputError(f"unknown shaper {name!r}: use {', '.join(SHAPERS)}") from None


__all__ = ["SHAPERS", "Shaper", "shaper_for"]
