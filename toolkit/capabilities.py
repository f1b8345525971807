"""What this machine can do for cnlab: probes of the kernel, tools and services.

Probes are read-only except the kernel ones, which work inside one throw-away network namespace
named `cnlab-probe-<pid>` that they always delete. `cnlab doctor` reports these findings, and the
emulator chooses its shaper from them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .targets import Completed, LocalTarget, NetnsTarget

# Debian packages that provide what cnlab needs on a machine that runs emulated testbeds.
APT_PACKAGES: dict[str, str] = {
    "ip": "iproute2",
    "tc": "iproute2",
    "nft": "nftables",
    "ethtool": "ethtool",
    "ping": "iputils-ping",
    "iperf3": "iperf3",
    "sshd": "openssh-server",
    "prometheus": "prometheus",
    "babeld": "babeld",
    "chromium": "chromium",
}
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None  # how to get it, when it is missing
    required: bool = True


@dataclass
class Findings:
    checks: list[Check] = field(default_factory=list)

    def get(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.required)


def which(tool: str) -> str | None:
    """Find a tool on PATH or in the sbin directories (root's PATH is not always complete)."""
    found = shutil.which(tool)
    if found:
        return found
    # Tools installed in cnlab's own virtualenv (ansible) are found even when it is not activated.
    for d in (str(Path(sys.executable).parent), *SBIN_DIRS):
        candidate = Path(d) / tool
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


HOST = LocalTarget("capability probe")


def _run(*argv: str, timeout: float = 10) -> Completed[str]:
    """A probe command on this machine; its exit code is the answer, so it is not checked."""
    return HOST.run(list(argv), timeout_s=timeout, check=False)


def is_root() -> bool:
    return os.geteuid() == 0


def user_namespaces_enabled() -> bool:
    try:
        return int(Path("/proc/sys/user/max_user_namespaces").read_text()) > 0
    except (OSError, ValueError):
        return False


class _ProbeNamespace:
    """A throw-away network namespace for kernel probes; deleted on exit."""

    def __init__(self) -> None:
        self.name = f"cnlab-probe-{os.getpid()}"

    def __enter__(self) -> _ProbeNamespace | None:
        if not is_root() or not which("ip"):
            return None
        if _run("ip", "netns", "add", self.name).returncode != 0:
            return None
        _run("ip", "-n", self.name, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        _run("ip", "netns", "del", self.name)

    def run(self, *argv: str) -> bool:
        return NetnsTarget(self.name, self.name).run(list(argv), timeout_s=10, check=False).returncode == 0


@cache
def kernel_features() -> dict[str, bool]:
    """netns, veth and qdisc support, probed once per process in a throw-away namespace."""
    features = {k: False for k in ("netns", "veth", "netem", "tbf", "htb", "nftables")}
    with _ProbeNamespace() as ns:
        if ns is None:
            return features
        features["netns"] = True
        features["veth"] = ns.run("ip", "link", "add", "pv0", "type", "veth", "peer", "name", "pv1")
        for qdisc, args in (
            ("netem", ["delay", "1ms"]),
            ("tbf", ["rate", "1mbit", "burst", "32kbit", "latency", "50ms"]),
            ("htb", []),
        ):
            features[qdisc] = ns.run("tc", "qdisc", "replace", "dev", "lo", "root", qdisc, *args)
        if which("nft"):
            features["nftables"] = ns.run("nft", "add", "table", "inet", "cnlabprobe")
    return features


def has_netem() -> bool:
    return kernel_features()["netem"]


def cgroup_controllers() -> dict[str, str]:
    """The cgroup controllers cnlab uses and where they are mounted ('v1:<path>' or 'v2:<path>')."""
    found: dict[str, str] = {}
    root = Path("/sys/fs/cgroup")
    v2 = root / "cgroup.controllers"
    if v2.exists():
        for ctl in v2.read_text().split():
            if ctl in ("cpu", "memory"):
                found[ctl] = f"v2:{root}"
    for ctl in ("cpu", "memory"):
        if ctl not in found and (root / ctl / "tasks").exists():
            found[ctl] = f"v1:{root / ctl}"
    return found


def _tool_version(tool: str, *args: str) -> str | None:
    path = which(tool)
    if not path:
        return None
    out = _run(path, *args)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else path


def _proc_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def neighbour_table_check() -> Check:
    """The kernel's neighbour table is shared by all namespaces; `cnlab up` sizes it per testbed
    (toolkit/testbed/hostlimits.py) and restores it on down."""
    vals = [_proc_int(f"/proc/sys/net/ipv4/neigh/default/gc_thresh{i}") for i in (1, 2, 3)]
    detail = "gc_thresh1/2/3 " + "/".join(str(v) for v in vals)
    if vals[2]:
        detail += f" (cnlab up raises it above {vals[2] // 64} devices: 64 entries per device)"
    try:
        saved = json.loads(Path("/run/cnlab/host-sysctl/saved.json").read_text())
        old = [saved.get(f"net.ipv4.neigh.default.gc_thresh{i}") for i in (1, 2, 3)]
        detail += f"; raised by live testbeds, restored to {'/'.join(map(str, old))} on their down"
    except (OSError, ValueError):
        pass
    return Check("neighbour table", vals[2] is not None, detail, "`cnlab up` raises it for its devices", required=False)


def file_limit_check() -> Check:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return Check(
        "file limit",
        True,
        f"open files: soft {soft}, hard {hard} (the node launcher raises its soft "
        "limit to the hard one; dense mode needs ~10 per node plus one per federation connection)",
        None,
        required=False,
    )


def probe() -> Findings:
    """Every check `cnlab doctor` reports, in a stable order."""
    f = Findings()
    add = f.checks.append
    root = is_root()
    userns = user_namespaces_enabled()
    add(
        Check(
            "privileges",
            root or userns,
            "root"
            if root
            else ("user namespaces available (not root)" if userns else "not root and user namespaces are off"),
            None if root or userns else "run as root (sudo), or enable user namespaces",
        )
    )
    for tool in ("ip", "tc", "nft", "ethtool", "ping", "iperf3"):
        path = which(tool)
        add(
            Check(
                tool,
                path is not None,
                path or "not found",
                f"apt-get install {APT_PACKAGES[tool]}",
                required=tool not in ("iperf3",),
            )
        )
    kf = kernel_features()
    notes = {
        "netns": "network namespaces",
        "veth": "veth pairs",
        "netem": "kernel netem qdisc (without it the userspace 'wire' shaper is used)",
        "tbf": "tbf qdisc (rate limits)",
        "htb": "htb qdisc (rate limits)",
        "nftables": "nftables in a namespace (partitions, faults)",
    }
    for feat, label in notes.items():
        fix = None
        if not kf[feat]:
            fix = (
                "nothing to install: a kernel without sch_netem; cnlab uses --shaper wire"
                if feat == "netem"
                else "needs root and a kernel with this feature"
            )
        add(
            Check(
                feat,
                kf[feat],
                ("available: " if kf[feat] else "absent: ") + label,
                fix,
                required=feat not in ("netem", "htb"),
            )
        )
    cg = cgroup_controllers()
    add(
        Check(
            "cgroups",
            {"cpu", "memory"} <= cg.keys(),
            ", ".join(f"{k} {v}" for k, v in sorted(cg.items())) or "no cpu/memory controller",
            "mount the cpu and memory cgroup controllers",
            required=False,
        )
    )
    add(neighbour_table_check())
    add(file_limit_check())
    prom = _tool_version("prometheus", "--version")
    add(Check("prometheus", prom is not None, prom or "not found", "apt-get install prometheus"))
    sshd = which("sshd")
    add(Check("sshd", sshd is not None, sshd or "not found", "apt-get install openssh-server"))
    chromium = _tool_version("chromium", "--version")
    add(
        Check(
            "chromium",
            chromium is not None,
            chromium or "not found (renders consoles and reports in tests)",
            "apt-get install chromium",
            required=False,
        )
    )
    babeld = which("babeld")
    add(
        Check(
            "babeld",
            babeld is not None,
            babeld or "not found (only for routing: babeld)",
            "apt-get install babeld",
            required=False,
        )
    )
    ansible = _tool_version("ansible-playbook", "--version")
    add(
        Check(
            "ansible",
            ansible is not None,
            ansible or "not found",
            "pip install ansible-core (make test / make demo install it in .venv)",
        )
    )
    return f


def missing_apt_packages(findings: Findings) -> list[str]:
    """Debian packages that would fix the failed checks that apt can fix."""
    pkgs = []
    for c in findings.checks:
        if not c.ok and c.fix and c.fix.startswith("apt-get install "):
            pkgs.append(c.fix.removeprefix("apt-get install "))
    return sorted(set(pkgs))
