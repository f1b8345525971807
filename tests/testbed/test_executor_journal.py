"""The executor's journal discipline, without root: every resource a step creates is in the
journal before the step runs, and `destroy` never touches what does not carry the testbed's id."""

from __future__ import annotations

from toolkit.testbed.executor import Executor, destroy
from toolkit.testbed.plan import plan_testbed
from toolkit.testbed.state import TestbedState

from .conftest import SMALL, line, two_sites


class RecordingExecutor(Executor):
    """Runs nothing: records each step and the journal as it was when the step would have run."""

    def __init__(self, plan, state):
        super().__init__(plan, state)
        self.seen: list[tuple[object, list[dict]]] = []

    def run_step(self, step):
        self.seen.append((step, self.state.resources()))


def test_every_resource_is_journalled_before_its_step_runs(tmp_path):
    V1 = {"cpu": "v1:/sys/fs/cgroup/cpu", "memory": "v1:/sys/fs/cgroup/memory"}
    for topo, shaper in ((two_sites(), "wire"), (line(3, profile=SMALL), "netem"), (line(2), "none")):
        state = TestbedState("tj", root=tmp_path / shaper)
        state.create()
        plan = plan_testbed(topo, "tj", shaper=shaper, state_dir=str(state.dir), cgroup_controllers=V1)
        ex = RecordingExecutor(plan, state)
        ex.apply()
        assert len(ex.seen) == sum(len(ph.steps) for ph in plan.phases())
        created = 0
        for step, journal in ex.seen:
            for r in step.resources:
                assert {"kind": r.kind, "name": r.name} in journal, (step.kind, r)
                created += 1
        assert created > 0
        # namespaces, the bridge and the management veths, cgroups, hosts dirs: all journalled
        kinds = {r["kind"] for r in state.resources()}
        assert {"netns", "rootif", "hostsdir"} <= kinds
        if shaper == "netem":
            assert "cgroup" in kinds


def test_destroy_refuses_journal_entries_the_testbed_does_not_own(tmp_path, monkeypatch):
    from toolkit.testbed import executor

    commands: list[str] = []  # a recording fake: nothing runs on the machine, whatever happens
    monkeypatch.setattr(executor, "ip_batch", lambda lines, netns=None, force=False: commands.extend(lines))
    monkeypatch.setattr(executor, "kill_all", lambda pids, grace_s=0: commands.append(f"kill {pids}"))
    state = TestbedState("tj", root=tmp_path)
    state.create()
    foreign = [
        {"kind": "rootif", "name": "eth0"},
        {"kind": "netns", "name": "cnothed0"},
        {"kind": "cgroup", "name": "/sys/fs/cgroup/memory/system.slice"},
        {"kind": "hostsdir", "name": "/etc/netns/other"},
    ]
    state.record(foreign)
    warnings = destroy(state)
    assert sorted(w.split(":")[0] for w in warnings) == sorted(f"skipped {r['kind']} {r['name']}" for r in foreign)
    assert not [c for c in commands if "eth0" in c or "cnothe" in c], commands
    assert not state.dir.exists()  # nothing of its own was left; the foreign names were not touched
