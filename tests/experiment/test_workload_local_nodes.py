"""The workload engine, observers and accounting against real node processes on 127.0.0.1
(`p2pvalue_node.testing`; no root, no testbed): nothing lost in a clean run, a loss injected on
purpose is caught, and replicas left diverged when anti-entropy cannot repair are reported."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("p2pvalue_node")
from p2pvalue_node.testing import ADMIN, make_nodes  # noqa: E402

from toolkit.experiment.driver import Interrupted, drive  # noqa: E402
from toolkit.experiment.endpoints import Endpoint  # noqa: E402
from toolkit.experiment.history import History, read_history  # noqa: E402
from toolkit.experiment.model import TimelineEvent  # noqa: E402
from toolkit.experiment.schema import CbppWorkload, ConstantWorkload  # noqa: E402
from toolkit.experiment.timeline import TimelineRunner  # noqa: E402
from toolkit.experiment.workload.cbpp import plan_cbpp  # noqa: E402
from toolkit.experiment.workload.constant import plan_constant  # noqa: E402
from toolkit.experiment.workload.object_ids import node_object_id  # noqa: E402


@pytest.fixture
def local_nodes(tmp_path):
    started = []

    def start(n: int = 3, **settings):
        nodes = make_nodes(tmp_path / f"nodes{len(started)}", n, **settings)
        for node in nodes:
            node.start()
            started.append(node)
        return {
            f"d{i}": Endpoint(f"d{i}", node.domain, f"http://127.0.0.1:{node.client_port}", ADMIN)
            for i, node in enumerate(nodes)
        }

    yield start
    for node in started:
        node.stop()


def run(plan, endpoints, path, quiesce_s=10.0):
    history = History(t0=time.time(), warmup_s=1.0, path=path)
    try:
        return asyncio.run(drive(plan, endpoints, history, quiesce_s=quiesce_s))
    finally:
        history.close()


def test_a_cbpp_workload_on_three_nodes_loses_nothing(local_nodes, tmp_path):
    eps = local_nodes(3)
    plan = plan_cbpp(
        CbppWorkload(model="cbpp", users=30, week_s=3, actions_per_hour=1),
        list(eps),
        {d: None for d in eps},
        seed=5,
        total_s=6,
    )
    out = run(plan, eps, tmp_path / "history.jsonl")
    r = out.results
    assert r["acknowledged_updates"] > 20
    assert r["lost_updates"] == 0 and r["diverged_updates"] == 0 and r["diverged_objects"] == 0
    assert r["present_everywhere"] == r["acknowledged_updates"]
    assert r["propagation_samples"] > 0 and r["propagation_p95_s"] is not None
    assert r["availability"] is not None and r["availability"] > 0.9
    assert r["runner_lag_p99_s"] is not None  # the error bound of the times the runner recorded
    # every planned action was invoked and completed, in the history file too
    lines = read_history(tmp_path / "history.jsonl")
    invokes = [x for x in lines if x["type"] == "invoke"]
    ends = [x for x in lines if x["type"] in ("ok", "fail", "info")]
    assert len(invokes) == len(ends) == len(plan.actions)
    assert [x["seq"] for x in invokes] == [a.seq for a in plan.actions]
    # contributions read back from the ledgers: local edits per user
    assert sum(out.contributions["per_user"].values()) >= r["acknowledged_updates"] - 5
    assert out.contributions["gini"] is not None


def node_id(plan, eps, name: str) -> str:
    """The id the nodes give the plan's object `name` (derived from its creator and the name)."""
    creator = next(o.creator for o in plan.objects if o.id == name)
    return node_object_id(eps[plan.users[creator].node].address(creator), name)


def test_an_update_dropped_by_a_node_is_reported_lost(local_nodes, tmp_path, monkeypatch):
    spec = ConstantWorkload(model="constant", rate_per_s=30, mix={"set_key": 1.0}, objects=4, span=3)
    plan = plan_constant(spec, ["d0", "d1", "d2"], seed=2, total_s=3)
    victim = next(a for a in plan.actions if a.at_s > 1.5 and a.uid)
    monkeypatch.setenv("P2PVALUE_TEST_DROP", victim.uid)  # the nodes acknowledge it and drop it
    eps = local_nodes(3)
    r = run(plan, eps, tmp_path / "h.jsonl", quiesce_s=5).results
    assert r["lost_updates"] == 1
    assert r["lost"][0]["uid"] == victim.uid and r["lost"][0]["object"] == node_id(plan, eps, victim.object)
    assert r["present_everywhere"] == r["acknowledged_updates"] - 1


def test_diverged_replicas_are_reported_when_anti_entropy_cannot_repair(local_nodes, tmp_path, monkeypatch):
    spec = ConstantWorkload(model="constant", rate_per_s=30, mix={"append": 1.0}, objects=4, span=3)
    plan = plan_constant(spec, ["d0", "d1", "d2"], seed=3, total_s=3)
    victim = next(a for a in plan.actions if a.at_s > 1.5 and a.uid)
    monkeypatch.setenv("P2PVALUE_TEST_NO_FORWARD", victim.uid)  # applied at home, never pushed
    eps = local_nodes(3, federation={"antientropy_interval_s": 3600.0})
    r = run(plan, eps, tmp_path / "h.jsonl", quiesce_s=3).results
    assert r["lost_updates"] == 0
    # the victim, and later updates of the same object from its node, which Yjs cannot integrate
    # on the other replicas without it (a client's updates apply in clock order)
    diverged = {d["uid"]: d for d in r["diverged"]}
    assert victim.uid in diverged and len(diverged[victim.uid]["missing_on"]) == 2
    oid = node_id(plan, eps, victim.object)
    assert {d["object"] for d in r["diverged"]} == {oid}
    assert r["diverged_object_ids"] == [oid] and r["diverged_objects"] == 1
    json.dumps(r)  # results are plain JSON


def test_anti_entropy_repairs_an_update_that_was_never_pushed(local_nodes, tmp_path, monkeypatch):
    spec = ConstantWorkload(model="constant", rate_per_s=30, mix={"append": 1.0}, objects=4, span=3)
    plan = plan_constant(spec, ["d0", "d1", "d2"], seed=3, total_s=3)
    victim = next(a for a in plan.actions if a.at_s > 1.5 and a.uid)
    monkeypatch.setenv("P2PVALUE_TEST_NO_FORWARD", victim.uid)
    eps = local_nodes(3, federation={"antientropy_interval_s": 1.0})
    r = run(plan, eps, tmp_path / "h.jsonl", quiesce_s=15).results
    assert r["lost_updates"] == 0 and r["diverged_updates"] == 0
    assert r["present_everywhere"] == r["acknowledged_updates"]


def test_without_observers_nothing_is_lost_and_propagation_is_unknown(local_nodes, tmp_path):
    spec = ConstantWorkload(model="constant", rate_per_s=30, mix={"set_key": 1.0}, objects=4, span=3, observe=False)
    plan = plan_constant(spec, ["d0", "d1", "d2"], seed=4, total_s=3)
    eps = local_nodes(3)
    history = History(t0=time.time(), warmup_s=1.0, path=tmp_path / "h.jsonl")
    try:
        out = asyncio.run(drive(plan, eps, history, quiesce_s=3, observe=False))
    finally:
        history.close()
    r = out.results
    assert r["acknowledged_updates"] > 20
    assert r["lost_updates"] == 0 and r["present_everywhere"] == r["acknowledged_updates"]
    # the observers were closed before the workload: they saw none of its updates
    assert r["propagation_samples"] == 0 and r["propagation_p95_s"] is None
    assert r["observed"] is False  # the checks that need observers say unknown (test_accounting_live.py)


def test_a_stop_asked_during_set_up_interrupts_it_before_the_workload(local_nodes, tmp_path):
    spec = ConstantWorkload(model="constant", rate_per_s=30, mix={"set_key": 1.0}, objects=4, span=3)
    plan = plan_constant(spec, ["d0", "d1", "d2"], seed=4, total_s=3)
    eps = local_nodes(3)
    history = History(t0=time.time(), warmup_s=1.0, path=tmp_path / "h.jsonl")
    try:
        with pytest.raises(Interrupted):
            asyncio.run(drive(plan, eps, history, should_stop=lambda: True))
    finally:
        history.close()
    assert history.ops == []  # no operation of the workload was started
    assert not any(x.get("event") == "workload_start" for x in read_history(tmp_path / "h.jsonl"))


class SlowHeal:
    """The timeline's Faults seam with a heal as slow as a partition of 1,000 devices (minutes
    there; seconds here): only heal is used."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def heal(self) -> None:
        time.sleep(self.seconds)


def test_a_fault_still_running_when_the_workload_ends_is_finished_before_quiesce(local_nodes, tmp_path):
    spec = ConstantWorkload(model="constant", rate_per_s=20, mix={"set_key": 1.0}, objects=2, span=3)
    plan = plan_constant(spec, ["d0", "d1", "d2"], seed=6, total_s=2)
    eps = local_nodes(3)
    history = History(t0=time.time(), warmup_s=0.0, path=tmp_path / "h.jsonl")
    heal = TimelineEvent(0, "heal", "heal", 1.0, {})
    timeline = TimelineRunner([heal], SlowHeal(4.0), 0.0, history.now)  # type: ignore[arg-type]
    try:
        out = asyncio.run(drive(plan, eps, history, timeline=timeline, quiesce_s=0.5))
    finally:
        history.close()
    assert [(e["name"], e["ok"]) for e in out.timeline] == [("heal", True)]  # not cut short
    assert out.end_t >= out.timeline[0]["achieved_t"] >= 5.0
