"""Propagation samples come only from updates first seen live; a sighting in a subscription's
state (an upper bound) still counts for presence and convergence."""

from __future__ import annotations

from toolkit.experiment.accounting import Replica, account
from toolkit.experiment.checks import evaluate, parse_check
from toolkit.experiment.history import Op
from toolkit.experiment.observers import Visibility


def test_only_live_sightings_are_propagation_samples():
    ops = [
        Op(1, "set_key", "u1", "a", "o1", "cx0000001", 1.0, "ok", 1.1),
        Op(2, "set_key", "u1", "a", "o1", "cx0000002", 2.0, "ok", 2.1),
    ]
    vis = Visibility()
    vis.saw("b", b"..cx0000001..", 1.6, live=False)  # in the state sent when b's observer subscribed
    vis.saw("b", b"..cx0000002..", 2.3, live=True)  # pushed to b's observer as it arrived
    vis.saw("b", b"..cx0000001..cx0000002..", 2.5, live=True)  # seen again: the first sighting stands
    assert vis.first_seen == {("cx0000001", "b"): 1.6, ("cx0000002", "b"): 2.3} and vis.live == {("cx0000002", "b")}
    replicas = [Replica("o1", n, frozenset({"cx0000001", "cx0000002"}), "h", ("u1@a",)) for n in ("a", "b")]
    heal = [{"kind": "heal", "name": "heal", "ok": True, "achieved_t": 1.2}]
    r = account(ops, replicas, vis.first_seen, {"o1": {"a", "b"}}, {}, heal, 3.0, vis.live)
    assert r["propagation_samples"] == 1 and abs(r["propagation_p50_s"] - 0.2) < 1e-9
    assert r["present_everywhere"] == 2 and r["lost_updates"] == 0
    # convergence after the heal uses every sighting: cx0000001 (acknowledged before it) at 1.6
    assert r["convergence"][0]["converged_s"] == 0.4
    # without a live set every sighting is a sample (callers that have only exact times)
    assert account(ops, replicas, vis.first_seen, {"o1": {"a", "b"}}, {}, [], 3.0)["propagation_samples"] == 2


def test_convergence_is_unknown_not_failed_when_the_run_did_not_observe():
    heal = {"event": "heal", "kind": "heal", "at_t": 1.0, "converged_s": None, "never_seen": 3}
    checks = [parse_check("converged_within_s(after: heal) < 10"), parse_check("propagation_p95_s < 2")]
    observed = evaluate(checks, {"observed": True, "convergence": [heal], "propagation_p95_s": None})
    unobserved = evaluate(checks, {"observed": False, "convergence": [heal], "propagation_p95_s": None})
    assert [v.verdict for v in observed] == ["fail", "unknown"]  # seen never: infinite
    assert [v.verdict for v in unobserved] == ["unknown", "unknown"]
    assert "workload.observe: false" in unobserved[0].detail
