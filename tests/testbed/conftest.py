"""Fixtures for testbed tests: topologies, random testbed ids, a private state dir, and a teardown
that always runs `down` for every testbed a test brought up (also when the test fails)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.testbed import naming
from toolkit.topology.model import Device, Direction, Link, Profile, Topology

HOST = Profile("host", None, None)
SMALL = Profile("vct", 0.5, 128)

CLI = str(Path(sys.executable).parent / "cnlab")  # the real entry point


def line(n: int = 3, delay_ms: float = 10, profile: Profile = HOST) -> Topology:
    names = [f"d{i}" for i in range(n)]
    devices = {x: Device(x, profile) for x in names}
    d = Direction(delay_ms=delay_ms)
    return Topology(f"line-{n}", devices, tuple(Link(a, b, d, d) for a, b in zip(names, names[1:], strict=False)))


def two_sites() -> Topology:
    """w1-w2-w3 (west) and e1-e2-e3 (east), a ring: w1-w2-w3-e3-e2-e1-w1 plus w2~e2.
    w1->w3's cheapest path crosses the east site, so a partition must reroute it."""
    devices = {n: Device(n, HOST, site="west" if n[0] == "w" else "east") for n in ("w1", "w2", "w3", "e1", "e2", "e3")}
    fast, slow = Direction(delay_ms=1), Direction(delay_ms=20)
    links = (
        Link("w1", "w2", slow, slow),
        Link("w2", "w3", slow, slow),
        Link("w3", "e3", fast, fast),
        Link("e3", "e2", fast, fast),
        Link("e2", "e1", fast, fast),
        Link("e1", "w1", fast, fast),
        Link("w2", "e2", slow, slow),
    )
    return Topology("two-sites", devices, links, sites=("west", "east"))


@pytest.fixture
def state_dir(tmp_path_factory, monkeypatch) -> Path:
    d = tmp_path_factory.mktemp("cnlab-state")
    monkeypatch.setenv("CNLAB_STATE_DIR", str(d))
    return d


@pytest.fixture
def testbeds(state_dir):
    """Bring testbeds up with `testbeds.up(topology, **kw)`; all are taken down at teardown."""
    from toolkit.testbed.state import live_ids
    from toolkit.testbed.testbed import Testbed

    class Maker:
        def up(self, topo: Topology, **kw) -> Testbed:
            kw.setdefault("testbed_id", naming.random_id())
            return Testbed.up(topo, **kw)

    yield Maker()
    errors = []
    for tid in live_ids(state_dir):
        try:
            Testbed.down_id(tid)
        except Exception as e:  # report, but try the others first
            errors.append(f"{tid}: {e}")
    assert not errors, errors


@pytest.fixture
def cli(state_dir):
    """Run `cnlab` (with the testbed commands registered) in a subprocess."""

    def run(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CNLAB_STATE_DIR": str(state_dir)}
        return subprocess.run(
            [CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, check=False, **kw
        )

    return run


def leftovers(tid: str) -> list[str]:
    """Everything on this machine that carries testbed tid's names."""
    found = []
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    found += [f"netns {n}" for n in netns if naming.owned_by("netns", n, tid)]
    found += [f"if {n}" for n in os.listdir("/sys/class/net") if naming.owned_by("rootif", n, tid)]
    from toolkit import capabilities

    # wherever the controllers are mounted: v1 (one tree per controller) or v2 (one unified tree)
    roots = {where.split(":", 1)[1] for where in capabilities.cgroup_controllers().values()}
    for root in sorted(roots):
        p = Path(root) / naming.cgroup_name(tid)
        if p.exists():
            found.append(f"cgroup {p}")
    if os.path.isdir("/etc/netns"):
        found += [f"hosts {n}" for n in os.listdir("/etc/netns") if naming.owned_by("netns", n, tid)]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"/{tid}/wire-" in cmd or f"cn{tid}d" in cmd:
                found.append(f"process {pid} {cmd[:80]!r}")
    return found
