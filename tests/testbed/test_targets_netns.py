"""The local and network-namespace targets on the real machine: commands run where they should,
failures name the target and the command, started processes are detached into the namespace,
files are written atomically (and kernel files in place)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from toolkit.errors import RunError
from toolkit.targets import LocalTarget, NetnsTarget

pytestmark = pytest.mark.netns


@pytest.fixture
def netns():
    name = f"cnt{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_local_target_runs_here_and_names_failures(tmp_path):
    t = LocalTarget("host")
    assert t.run(["sh", "-c", "echo $$"]).stdout.strip().isdigit()
    assert t.run(["cat"], input="abc\n").stdout == "abc\n"
    assert t.run(["false"], check=False).returncode == 1
    with pytest.raises(RunError, match=r"^host: `sh -c echo oops >&2; exit 3` failed \(exit 3\): oops"):
        t.run(["sh", "-c", "echo oops >&2; exit 3"])
    with pytest.raises(RunError, match="host: `no-such-cnlab-tool` not found"):
        t.run(["no-such-cnlab-tool"])
    with pytest.raises(RunError, match="did not finish within 0.2 s"):
        t.run(["sleep", "5"], timeout_s=0.2)
    t.make_dir(str(tmp_path / "a" / "b"))
    t.put_file(str(tmp_path / "a" / "b" / "f"), b"one", mode=0o600)
    t.put_file(str(tmp_path / "a" / "b" / "f"), b"two", mode=0o600)
    f = tmp_path / "a" / "b" / "f"
    assert f.read_bytes() == b"two" and f.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in f.parent.iterdir()) == ["f"]  # no temporary file left


def test_netns_target_runs_inside_the_namespace(netns, tmp_path):
    t = NetnsTarget("dev", netns)
    own = os.stat("/proc/self/ns/net").st_ino
    inside = os.stat(f"/run/netns/{netns}").st_ino
    links = t.run(["ip", "-o", "link", "show"]).stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]  # a fresh namespace
    with pytest.raises(RunError, match=rf"^device dev \({netns}\): `ip link set nosuch up` failed"):
        t.run(["ip", "link", "set", "nosuch", "up"])

    log = tmp_path / "p.log"
    pid = t.start(["sh", "-c", "echo started; exec sleep 30"], log_path=str(log))
    try:
        deadline = time.monotonic() + 10
        while "started" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.read_text() == "started\n"
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == inside != own
        assert os.getsid(pid) == pid  # detached: its own session
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)

    # in-process settings inside the namespace; this process's own namespace is untouched
    t.ops(["up lo", "sysctl net.ipv4.ip_forward 1"])
    assert "UP" in t.run(["ip", "-o", "link", "show", "lo"]).stdout.split("<")[1].split(">")[0].split(",")
    assert t.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    assert os.stat("/proc/thread-self/ns/net").st_ino == own
    with pytest.raises(RunError, match=f"'up nosuch0' in {netns} failed"):
        t.ops(["up nosuch0"])


def test_kernel_files_are_written_in_place(netns):
    # a sysctl of the namespace, through the path the executor writes cgroup settings with
    t = NetnsTarget("dev", netns)
    from toolkit.targets import nsops

    with nsops.netns(netns):
        t.put_file("/proc/sys/net/ipv4/ip_default_ttl", b"33\n")
    assert t.run(["cat", "/proc/sys/net/ipv4/ip_default_ttl"]).stdout.strip() == "33"
    assert Path("/proc/sys/net/ipv4/ip_default_ttl").read_text().strip() != "33"  # not ours


@pytest.fixture
def netns_pair():
    names = [f"cnt{secrets.token_hex(3)}" for _ in range(2)]
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=True)


def test_rtnl_changes_routes_as_ip_batch_does(netns_pair):
    """The same changes through `ip -batch` in one namespace and rtnetlink in the other leave
    identical routing tables; refused requests name the route and the reason."""
    from toolkit.targets import nsops, rtnl
    from toolkit.testbed.executor import ip_batch
    from toolkit.testbed.plan import Route, route_lines

    setup = [
        "link add rx0 type veth peer name rx1",
        "link set lo up",
        "link set rx0 up",
        "link set rx1 up",
        "addr add 198.19.0.1/32 dev lo",
        "addr add fd00:c0::1/128 dev lo nodad",
        "addr add 198.19.128.0/31 dev rx0",
        "addr add fd00:c1::1/64 dev rx0 nodad",
        "addr add 198.19.128.2/31 dev rx1",
        "addr add fd00:c1:1::1/64 dev rx1 nodad",
    ]
    for ns in netns_pair:
        ip_batch(setup, ns)

    def route(i: int, v6: bool, dev: str) -> tuple[str, str, str, str]:  # (dst, via, dev, src)
        if v6:
            return (f"fd00:c0::{i:x}/128", "fd00:c1::2" if dev == "rx0" else "fd00:c1:1::2", dev, "fd00:c0::1")
        return (
            f"198.19.{i // 256}.{i % 256}/32",
            "198.19.128.1" if dev == "rx0" else "198.19.128.3",
            dev,
            "198.19.0.1",
        )

    def lines(routes: list[tuple[str, str, str, str]]) -> list[str]:
        return route_lines("replace", [Route(*r) for r in routes])

    first = [route(i, v6, "rx0") for v6 in (False, True) for i in range(2, 400)]
    moved = [route(i, v6, "rx1") for v6 in (False, True) for i in range(2, 400, 7)]
    gone = [r[0] for r in first[::5] if r[0] not in {m[0] for m in moved}]
    ip_batch(lines(first), netns_pair[0])
    ip_batch([f"route del {d}" for d in gone], netns_pair[0])
    ip_batch(lines(moved), netns_pair[0])
    with nsops.netns(netns_pair[1]):
        assert rtnl.change_routes([], first) == len(first)
        assert rtnl.change_routes(gone, moved) == len(gone) + len(moved)

    def table(ns: str) -> str:
        out = [
            subprocess.run(["ip", "-n", ns, fam, "route", "show"], capture_output=True, text=True, check=True).stdout
            for fam in ("-4", "-6")
        ]
        return "\n".join(sorted("".join(out).splitlines()))  # link-local routes come in any order

    assert table(netns_pair[0]) == table(netns_pair[1])
    assert table(netns_pair[1]).count(" via ") == len(first) - len(gone)
    with nsops.netns(netns_pair[1]), pytest.raises(RunError) as err:
        rtnl.change_routes([gone[0], "198.19.0.2/32"], [route(2, False, "nosuch")])
    assert str(err.value).startswith("route replace 198.19.0.2/32 dev nosuch: no such interface")
    with nsops.netns(netns_pair[1]), pytest.raises(RunError) as err:
        rtnl.change_routes([gone[0], "198.19.0.2/32"], [])
    assert str(err.value) == f"route del {gone[0]}: No such process (ESRCH)"
    assert "198.19.0.2 " not in table(netns_pair[1])  # the good request was applied all the same
