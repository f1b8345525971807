"""The executor's journal discipline, without root: the real executor runs every phase against a
recording fake target (nothing runs on the machine), which proves that every resource a step
creates is in the journal before the command that creates it, and that `destroy` never touches
what does not carry the testbed's id."""

from __future__ import annotations

import subprocess

from toolkit.testbed.executor import Executor, destroy
from toolkit.testbed.plan import plan_testbed
from toolkit.testbed.state import TestbedState

from .conftest import SMALL, line, two_sites

NO_SUCH_PID = 4_194_305  # above the kernel's largest pid_max: never a live process


class Recorder:
    """Every call any fake target receives, with the journal as it was at that moment."""

    def __init__(self, state: TestbedState):
        self.state = state
        self.calls: list[dict] = []

    def add(self, where: str, what: str, detail: list[str], text: str = "") -> None:
        self.calls.append(
            {"where": where, "what": what, "detail": detail, "text": text, "journal": self.state.resources()}
        )


class FakeTarget:
    """A Target (and the executor's DeviceTarget) that records instead of running. A started
    wire says `ready` in its log, as the real one does."""

    def __init__(self, name: str, rec: Recorder):
        self.name = name
        self.rec = rec

    def run(self, argv, *, input=None, timeout_s=60, check=True):
        self.rec.add(self.name, "run", list(argv), input or "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def start(self, argv, *, log_path, env=None):
        self.rec.add(self.name, "start", list(argv))
        with open(log_path, "a") as f:
            f.write("ready\n")
        return NO_SUCH_PID

    def put_file(self, path, content, mode=0o644):
        self.rec.add(self.name, "put_file", [path], content.decode())

    def make_dir(self, path):
        self.rec.add(self.name, "make_dir", [path])

    def ops(self, lines):
        self.rec.add(self.name, "ops", list(lines))


def created_by(call: dict) -> set[tuple[str, str]]:
    """(kind, name) of the journalled resources a recorded call creates."""
    if call["what"] == "make_dir":
        return {("dir", call["detail"][0])}
    out = set()
    for ln in call["text"].splitlines():
        words = ln.split()
        if words[:2] == ["netns", "add"]:
            out.add(("netns", words[2]))
        elif words[:2] == ["link", "add"]:
            out.add(("rootif", words[2]))
    return out


def test_every_resource_is_journalled_before_the_command_that_creates_it(tmp_path):
    V1 = {"cpu": "v1:/sys/fs/cgroup/cpu", "memory": "v1:/sys/fs/cgroup/memory"}
    for topo, shaper in ((two_sites(), "wire"), (line(3, profile=SMALL), "netem"), (line(2), "none")):
        state = TestbedState("tj", root=tmp_path / shaper)
        state.create()
        plan = plan_testbed(topo, "tj", shaper=shaper, state_dir=str(state.dir), cgroup_controllers=V1)
        rec = Recorder(state)
        ex = Executor(plan, state, host=FakeTarget("host", rec), device=lambda ns, rec=rec: FakeTarget(ns, rec))
        ex.apply()

        journal_at_end = state.resources()
        kinds = {r["kind"] for r in journal_at_end}
        assert {"netns", "rootif", "hostsdir"} <= kinds
        owned = {(r["kind"], r["name"]) for r in journal_at_end}
        checked = 0
        for call in rec.calls:
            for kind, name in created_by(call):
                at_call = {(r["kind"], r["name"]) for r in call["journal"]}
                if kind == "dir":  # a cgroup or a hosts directory
                    assert ("cgroup", name) in at_call or ("hostsdir", name) in at_call, name
                elif (kind, name) in owned:  # link veths live inside our namespaces: not journalled
                    assert (kind, name) in at_call, (kind, name)
                checked += 1
        assert checked >= len(plan.namespaces()) + len(plan.devices)

        # the real code path ran: ip batches on the host (`-n NS` inside a device), settings as
        # in-process ops inside each device, every hosts file written
        batches = [c for c in rec.calls if c["what"] == "run" and c["detail"][:1] == ["ip"] and "-batch" in c["detail"]]
        assert all(c["where"] == "host" for c in batches)
        assert {c["detail"][2] for c in batches if c["detail"][1] == "-n"} == {d.netns for d in plan.devices.values()}
        ops = {c["where"] for c in rec.calls if c["what"] == "ops"}
        assert {d.netns for d in plan.devices.values()} <= ops
        files = {c["detail"][0] for c in rec.calls if c["what"] == "put_file"}
        assert {f"/etc/netns/{d.netns}/hosts" for d in plan.devices.values()} <= files
        if shaper == "netem":
            assert "cgroup" in kinds
            assert [c for c in rec.calls if c["detail"][:1] == ["tc"]], "netem shapes with tc batches"
            assert any(p.endswith("memory.limit_in_bytes") for p in files)
        if shaper == "wire":
            (started,) = [c for c in rec.calls if c["what"] == "start"]
            assert started["where"] == plan.wire_shards[0].netns
            assert started["detail"][1:3] == ["-m", "toolkit.wire"] and "--no-setup" in started["detail"]
            assert {"kind": "process", "name": str(NO_SUCH_PID)} in [
                {"kind": r["kind"], "name": r["name"]} for r in state.resources()
            ]
        # nothing outside this testbed: every namespace a command runs in or names is the plan's
        ours = set(plan.namespaces())
        for c in rec.calls:
            assert c["where"] in ours | {"host"}, c["where"]
            argv = c["detail"]
            if c["what"] == "run" and "-n" in argv:
                assert argv[argv.index("-n") + 1] in ours, argv


def test_destroy_refuses_journal_entries_the_testbed_does_not_own(tmp_path, monkeypatch):
    from toolkit.testbed import executor

    # no process is signalled, whatever happens (the foreign entries name none)
    monkeypatch.setattr(executor, "kill_all", lambda pids, grace_s=0: pytest_fail(f"kill {pids}"))
    state = TestbedState("tj", root=tmp_path)
    state.create()
    rec = Recorder(state)
    foreign = [
        {"kind": "rootif", "name": "eth0"},
        {"kind": "netns", "name": "cnothed0"},
        {"kind": "cgroup", "name": "/sys/fs/cgroup/memory/system.slice"},
        {"kind": "hostsdir", "name": "/etc/netns/other"},
    ]
    state.record(foreign)
    warnings = destroy(state, host=FakeTarget("host", rec))
    assert sorted(w.split(":")[0] for w in warnings) == sorted(f"skipped {r['kind']} {r['name']}" for r in foreign)
    touched = " ".join(" ".join(c["detail"]) + " " + c["text"] for c in rec.calls)
    assert "eth0" not in touched and "cnothe" not in touched, rec.calls
    assert not state.dir.exists()  # nothing of its own was left; the foreign names were not touched


def pytest_fail(msg: str) -> None:
    raise AssertionError(msg)
