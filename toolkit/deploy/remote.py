"""One-shot work on devices over SSH (paramiko): probing facts and collecting logs and databases.

Bounded parallelism (`for_each`, at most `max_parallel` devices at once) and the explicit
host-key policy of `toolkit.targets.ssh` (per-testbed known_hosts, pins, accept-new).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..targets.ssh import KnownHosts, SshEndpoint, SshTarget, for_each
from ..testbed.remote import CAPABILITY_PROBE
from .inventory import device_paths

# One round trip per device; each line KEY=VALUE. nft, tc and netem: the same probe `cnlab up`
# runs on the devices of a remote testbed (toolkit/testbed/remote.py).
PROBE_SCRIPT = (
    r"""
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "python=$( (python3 -c 'import platform; print(platform.python_version())') 2>/dev/null || echo none)"
awk '/^MemTotal:/ {print "memory_kb=" $2} /^MemAvailable:/ {print "memory_available_kb=" $2}' /proc/meminfo
df -Pk "${CNLAB_ROOT:-/}" 2>/dev/null | awk 'NR==2 {print "disk_free_kb=" $4}'
echo "os=$( . /etc/os-release 2>/dev/null && echo "$ID $VERSION_ID" || echo unknown)"
"""
    + CAPABILITY_PROBE
)


@dataclass
class DeviceFacts:
    device: str
    arch: str = ""
    kernel: str = ""
    os: str = ""
    python: str = ""
    memory_mb: int = 0
    memory_available_mb: int = 0
    disk_free_mb: int = 0
    netem: str = "unknown"  # yes | no | unknown
    nft: str = "unknown"  # yes | no: nftables usable (link down on remote testbeds)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_probe(device: str, text: str) -> DeviceFacts:
    kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return DeviceFacts(
        device=device,
        arch=kv.get("arch", ""),
        kernel=kv.get("kernel", ""),
        os=kv.get("os", ""),
        python=kv.get("python", ""),
        memory_mb=int(kv.get("memory_kb", 0)) // 1024,
        memory_available_mb=int(kv.get("memory_available_kb", 0)) // 1024,
        disk_free_mb=int(kv.get("disk_free_kb", 0)) // 1024,
        netem=kv.get("netem", "unknown"),
        nft=kv.get("nft", "unknown"),
    )


@dataclass(frozen=True)
class Device:
    """A device to work on: how to reach it, and its root prefix ('' on real devices)."""

    endpoint: SshEndpoint
    root: str = ""


def probe(devices: list[Device], known_hosts: str, max_parallel: int = 10) -> list[DeviceFacts]:
    known = KnownHosts(known_hosts)

    def one(d: Device) -> DeviceFacts:
        with SshTarget(d.endpoint, known) as t:
            env = f"CNLAB_ROOT={shlex.quote(d.root)} " if d.root else ""
            cp = t.run_shell(f"{env}sh -c {shlex.quote(PROBE_SCRIPT)}", timeout_s=30, check=True)
            return parse_probe(d.endpoint.name, cp.stdout)

    out = []
    for d, r in for_each(devices, one, max_parallel):
        out.append(DeviceFacts(device=d.endpoint.name, error=str(r)) if isinstance(r, BaseException) else r)
    return out


# Files collected from every node: (remote path relative to the node's paths, local name)
SNAPSHOT_DB = (
    "import sqlite3, sys; src = sqlite3.connect(sys.argv[1]); dst = sqlite3.connect(sys.argv[2]); "
    "src.backup(dst); dst.close(); src.close()"
)


@dataclass
class Collected:
    device: str
    files: list[str]
    error: str = ""


def collect(devices: list[Device], known_hosts: str, out_dir: Path, max_parallel: int = 10) -> list[Collected]:
    """Per device into out_dir/<device>/: the node's log, a consistent copy of its database (SQLite
    backup API on the device), its config, the service manager's journal excerpt."""
    known = KnownHosts(known_hosts)

    def one(d: Device) -> Collected:
        paths = device_paths(d.root)
        dest = out_dir / d.endpoint.name
        dest.mkdir(parents=True, exist_ok=True)
        got: list[str] = []
        with SshTarget(d.endpoint, known) as t:
            log = f"{paths['p2pvalue_log_dir']}/p2pvalue.log"
            db = f"{paths['p2pvalue_data_dir']}/node.sqlite3"
            snap = f"{paths['p2pvalue_run_dir']}/collect.sqlite3"
            for remote, local in ((log, "p2pvalue.log"), (paths["p2pvalue_config"], "node.yaml")):
                if t.run(["test", "-f", remote], check=False).returncode == 0:
                    (dest / local).write_bytes(t.get_file(remote))
                    got.append(local)
            if t.run(["test", "-f", db], check=False).returncode == 0:
                t.run(["python3", "-c", SNAPSHOT_DB, db, snap], timeout_s=120)
                try:
                    (dest / "node.sqlite3").write_bytes(t.get_file(snap))
                    got.append("node.sqlite3")
                finally:
                    t.run(["rm", "-f", snap], check=False)
            journal = t.run_shell(
                "if command -v journalctl >/dev/null && [ -d /run/systemd/system ]; then "
                "journalctl -u p2pvalue -n 1000 --no-pager; "
                "elif command -v logread >/dev/null; then logread -e p2pvalue | tail -n 1000; fi",
                check=False,
            ).stdout
            if journal.strip():
                (dest / "journal.txt").write_text(journal)
                got.append("journal.txt")
        if not got:
            raise RunError(f"device {d.endpoint.name}: no node files found under {d.root or '/'}")
        return Collected(d.endpoint.name, got)

    return [
        Collected(d.endpoint.name, [], str(r)) if isinstance(r, BaseException) else r
        for d, r in for_each(devices, one, max_parallel)
    ]
