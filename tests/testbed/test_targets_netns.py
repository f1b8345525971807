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
