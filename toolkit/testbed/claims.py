"""Management-subnet claims: which 198.18.0.0/16 blocks live testbeds use, in one place.

One file per claimed subnet under CLAIMS_DIR (`198.18.0.0_24`), holding the state directory of the
testbed that claimed it. A claim counts while that directory exists, so a crashed testbed's claim
stops counting once `down` removed its state. `up` claims under the machine lock; `destroy`
releases a claim only if it still names the testbed.
"""

from __future__ import annotations

from pathlib import Path

from ..targets import LocalTarget
from .state import TestbedState

CLAIMS_DIR = Path("/run/cnlab/mgmt-subnets")


def claim_path(subnet: str) -> Path:
    return CLAIMS_DIR / subnet.replace("/", "_")


def is_claim(path: Path) -> bool:
    return path.parent == CLAIMS_DIR


def subnets_in_use() -> list[str]:
    """Subnets claimed by testbeds that still exist, and every IPv4 address in the root namespace."""
    taken = []
    if CLAIMS_DIR.is_dir():
        for path in CLAIMS_DIR.iterdir():
            try:
                owner = path.read_text().strip()
            except FileNotFoundError:  # released meanwhile
                continue
            if owner and Path(owner).is_dir():
                taken.append(path.name.replace("_", "/"))
    cp = LocalTarget("host").run(["ip", "-4", "-o", "addr", "show"])
    for line in cp.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            taken.append(parts[parts.index("inet") + 1])
    return taken


def claim(state: TestbedState, subnet: str) -> None:
    """Journal the claim, then write it (call under the machine lock)."""
    path = claim_path(subnet)
    state.record([{"kind": "file", "name": str(path)}])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(state.dir) + "\n")


def release(path: Path, state: TestbedState) -> str | None:
    """Remove a claim if it names this testbed; a warning when another testbed holds it."""
    try:
        owner = path.read_text().strip()
    except FileNotFoundError:
        return None
    if owner != str(state.dir):
        return f"kept {path}: it is claimed by another testbed"
    path.unlink(missing_ok=True)
    return None
