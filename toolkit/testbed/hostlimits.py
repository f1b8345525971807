"""Host settings a testbed needs at scale, sized for its device count, journalled and restored.

The kernel's neighbour (ARP/NDP) table is shared by all network namespaces: with the defaults
(gc_thresh3 = 1,024 entries) a few hundred federating devices overflow it, SYNs are dropped
("neighbour table overflow") and connections take seconds. `up` raises
net.{ipv4,ipv6}.neigh.default.gc_thresh1/2/3 for its devices; `down` puts the old values back
when no other live testbed needs more: none claims more, and the device namespaces of all cnlab
testbeds left on the machine (also of testbeds whose cnlab does not claim) fit the saved values.

Machine-wide state in /run/cnlab/host-sysctl/ (whatever CNLAB_STATE_DIR says):
  saved.json       the values before the first testbed changed them
  claims/<name>    one per testbed: {"state_dir", "values"}; a claim whose state dir is gone is stale
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

REGISTRY = Path("/run/cnlab/host-sysctl")
NEIGH_KEYS = [f"net.{fam}.neigh.default.gc_thresh{i}" for fam in ("ipv4", "ipv6") for i in (1, 2, 3)]
ENTRIES_PER_DEVICE = 64  # 246 FFWien devices -> 16,384 (measured need ~1,300; generous on purpose)


def neigh_sizes(n_devices: int) -> dict[str, int]:
    """gc_thresh3 = the next power of two >= 64 per device (at least the kernel's 1,024);
    gc_thresh2 = half of it, gc_thresh1 = an eighth (the kernel's defaults keep 1:4:8)."""
    t3 = 1024
    while t3 < n_devices * ENTRIES_PER_DEVICE:
        t3 *= 2
    out = {}
    for fam in ("ipv4", "ipv6"):
        out[f"net.{fam}.neigh.default.gc_thresh1"] = max(128, t3 // 8)
        out[f"net.{fam}.neigh.default.gc_thresh2"] = max(512, t3 // 2)
        out[f"net.{fam}.neigh.default.gc_thresh3"] = t3
    return out


def _path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read(key: str) -> int | None:
    try:
        return int(_path(key).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _write(key: str, value: int) -> None:
    _path(key).write_text(str(value))


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    (REGISTRY / "claims").mkdir(parents=True, exist_ok=True)
    with open(REGISTRY / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def claim_path(state_dir: str) -> str:
    return str(REGISTRY / "claims" / state_dir.strip("/").replace("/", "_"))


def _live_claims() -> list[dict[str, int]]:
    out = []
    for p in (REGISTRY / "claims").iterdir():
        try:
            c = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if os.path.isdir(c.get("state_dir", "")):
            out.append(c["values"])
        else:
            p.unlink(missing_ok=True)  # a testbed that is gone (its state dir was removed)
    return out


_DEVICE_NETNS = re.compile(r"^cn[a-z][a-z0-9]{0,4}d\d+$")


def machine_devices() -> int:
    """Device namespaces of every cnlab testbed on this machine, whatever their state dir, and
    also of testbeds brought up by a cnlab that does not claim (they share the table too)."""
    try:
        return sum(1 for n in os.listdir("/run/netns") if _DEVICE_NETNS.match(n))
    except OSError:
        return 0


def _wanted(claims: list[dict[str, int]]) -> dict[str, int]:
    wanted = neigh_sizes(machine_devices())  # the kernel's defaults for up to 16 devices
    for values in claims:
        for k, v in values.items():
            wanted[k] = max(wanted.get(k, 0), v)
    return wanted


def _saved() -> dict[str, int]:
    try:
        return json.loads((REGISTRY / "saved.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _apply(wanted: dict[str, int], saved: dict[str, int]) -> dict[str, tuple[int | None, int]]:
    changed = {}
    for key in NEIGH_KEYS:
        target = max(saved.get(key, 0), wanted.get(key, 0))
        cur = read(key)
        if cur is not None and target and cur != target:
            _write(key, target)
            changed[key] = (cur, target)
    return changed


def claim(state_dir: str, n_devices: int) -> dict[str, tuple[int | None, int]]:
    """Raise the host's settings for a testbed of n devices; returns {key: (old, new)} changed.
    The caller journals claim_path(state_dir) before calling."""
    with _locked():
        saved = _saved()
        if not saved:
            saved = {k: v for k in NEIGH_KEYS if (v := read(k)) is not None}
            (REGISTRY / "saved.json").write_text(json.dumps(saved))
        Path(claim_path(state_dir)).write_text(json.dumps({"state_dir": state_dir, "values": neigh_sizes(n_devices)}))
        return _apply(_wanted(_live_claims()), saved)


def release(path: str) -> dict[str, tuple[int | None, int]]:
    """Drop a testbed's claim; restore the saved values when no live testbed claims more."""
    if not REGISTRY.is_dir():
        return {}
    with _locked():
        Path(path).unlink(missing_ok=True)
        saved = _saved()
        wanted = _wanted(_live_claims())
        changed = _apply(wanted, saved)
        if all(v <= saved.get(k, 0) for k, v in wanted.items()):  # back to the saved values
            (REGISTRY / "saved.json").unlink(missing_ok=True)
        return changed


def report() -> dict[str, dict[str, int | None]]:
    """For `cnlab doctor`: current and saved (pre-testbed) values."""
    saved = _saved() if REGISTRY.is_dir() else {}
    return {k: {"current": read(k), "saved": saved.get(k)} for k in NEIGH_KEYS}
