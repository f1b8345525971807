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


def test_updates_between_islands_of_one_group_are_held_back_not_measured():
    # a partition asked for groups [c] and [a, b]; cutting c off left a and b on islands of their own
    ops = [
        Op(1, "set_key", "u1", "a", "o1", "cx0000001", 0.5, "ok", 0.6),  # before the cut
        Op(2, "set_key", "u1", "a", "o1", "cx0000002", 1.0, "ok", 1.05),  # while the cut is applied
        Op(3, "set_key", "u1", "a", "o1", "cx0000003", 2.0, "ok", 2.1),  # cut: a and b are apart
        Op(4, "set_key", "u1", "a", "o1", "cx0000004", 5.0, "ok", 5.1),  # healed
    ]
    seen = {("cx0000001", "b"): 0.7, ("cx0000002", "b"): 4.1, ("cx0000003", "b"): 4.2, ("cx0000004", "b"): 5.2}
    timeline = [
        {
            "kind": "partition",
            "name": "cut",
            "ok": True,
            "started_t": 1.0,
            "achieved_t": 1.5,
            "groups": [["c"], ["a", "b"]],
            "islands": [["a"], ["b"], ["c"]],
        },
        {"kind": "heal", "name": "heal", "ok": True, "started_t": 4.0, "achieved_t": 4.0},
    ]
    replicas = [Replica("o1", n, frozenset(u for u, _ in seen), "h", ("u1@a",)) for n in ("a", "b")]
    r = account(ops, replicas, seen, {"o1": {"a", "b"}}, {}, timeline, 6.0)
    held = sorted(s["uid"] for s in r["propagation"] if s["partitioned"])
    assert held == ["cx0000002", "cx0000003"]
    assert r["propagation_samples"] == 2 and r["propagation_partitioned_samples"] == 2
    assert abs(r["propagation_p95_s"] - 0.1) < 1e-3  # 0.1 s each, not the 3 s the cut held them
    # with the groups only (a log written before islands were recorded) a and b count as together
    old = [{k: v for k, v in e.items() if k != "islands"} for e in timeline]
    assert account(ops, replicas, seen, {"o1": {"a", "b"}}, {}, old, 6.0)["propagation_partitioned_samples"] == 0


def test_the_report_names_the_devices_a_cut_left_apart_from_their_group():
    from toolkit.experiment.report import _event_text

    split = {"kind": "partition", "describe": "partition c", "groups": [["c"], ["a", "b", "d"]]}
    assert _event_text({**split, "islands": [["a", "d"], ["b"], ["c"]]}) == (
        "partition c; 1 more islands were cut off from the rest of their group: b"
    )
    assert _event_text({**split, "islands": [["a", "b", "d"], ["c"]]}) == "partition c"
