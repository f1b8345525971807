"""The shaper strategies, pure: their plan phases and the exact commands they run at run time,
through a recording fake of the live testbed (no root; netem cannot run on this kernel)."""

from __future__ import annotations

import pytest

from toolkit.errors import RunError
from toolkit.testbed.plan import plan_testbed
from toolkit.testbed.shapers import SHAPERS, shaper_for
from toolkit.topology.model import Direction

from .conftest import line


class Recorder:
    """A LinkRuntime that records (netns, argv, input) instead of running anything."""

    def __init__(self, plan):
        self.plan = plan
        self.calls: list[tuple[str, list[str], str | None]] = []

    def ns_run(self, netns, argv, *, input=None):
        self.calls.append((netns, argv, input))
        return '[{"stats64": {"tx": {"packets": 3}}}]'


def plan(shaper: str):
    return plan_testbed(line(2, delay_ms=10), "tb1", shaper=shaper, state_dir="/s")


def test_one_strategy_per_kind_and_unknown_names_are_input_errors():
    assert sorted(SHAPERS) == ["netem", "none", "ssh", "wire"]
    from toolkit.errors import InputError

    with pytest.raises(InputError, match="unknown shaper 'tc'"):
        shaper_for("tc")


def test_netem_plan_shapes_each_end_egress_with_exact_tc_lines():
    p = plan("netem")
    phase = next(ph for ph in p.phases() if ph.title == "netem shaping")
    by_ns = {s.netns: s.lines for s in phase.steps}
    assert by_ns == {
        "cntb1d0": ["qdisc replace dev tb1l0a root handle 1: netem delay 10ms"],
        "cntb1d1": ["qdisc replace dev tb1l0b root handle 1: netem delay 10ms"],
    }
    # direct veth pairs, no wire namespace, an nftables link-down set in every device with links
    veths = next(ph for ph in p.phases() if ph.title == "link veths").steps[0].lines
    assert veths == ["link add tb1l0a netns cntb1d0 type veth peer name tb1l0b netns cntb1d1"]
    assert p.wire_netns is None and p.wire_shards == []
    nft = [s for ph in p.phases() for s in ph.steps if s.kind == "sh"]
    assert len(nft) == 2 and all("set linkdown" in s.lines[0] for s in nft)


def test_netem_run_time_changes_are_exact_and_remove_a_rate_only_when_there_was_one():
    p = plan("netem")
    rt = Recorder(p)
    link = p.links[0]
    old = (Direction(delay_ms=10, rate_kbit=500), Direction(delay_ms=10))
    new = (Direction(delay_ms=50), Direction(delay_ms=10, rate_kbit=2000))
    shaper_for("netem").set_directions(rt, link, new, old)
    assert [(ns, argv) for ns, argv, _ in rt.calls] == [
        ("cntb1d0", ["tc", "-batch", "-"]),
        ("cntb1d1", ["tc", "-batch", "-"]),
    ]
    assert rt.calls[0][2] == (
        "qdisc replace dev tb1l0a root handle 1: netem delay 50ms\nqdisc del dev tb1l0a parent 1:1 handle 10:\n"
    )
    assert rt.calls[1][2].splitlines()[1].startswith("qdisc replace dev tb1l0b parent 1:1 handle 10: tbf rate 2000kbit")


@pytest.mark.parametrize("name", ["netem", "none"])
def test_link_down_and_up_through_nftables_is_idempotent(name):
    p = plan(name)
    rt = Recorder(p)
    shaper = shaper_for(name)
    shaper.set_up(rt, p.links[0], False)
    shaper.set_up(rt, p.links[0], True)
    assert [c[0] for c in rt.calls] == ["cntb1d0", "cntb1d1", "cntb1d0", "cntb1d1"]
    assert all(c[1] == ["nft", "-f", "-"] for c in rt.calls)
    assert rt.calls[0][2] == "add element inet cnlab linkdown { tb1l0a }\n"
    # up: add then delete in one transaction, so it succeeds whether or not the end was down
    assert rt.calls[2][2] == (
        "add element inet cnlab linkdown { tb1l0a }\ndelete element inet cnlab linkdown { tb1l0a }\n"
    )


def test_none_cannot_shape_and_says_so():
    p = plan("none")
    with pytest.raises(RunError, match="without a shaper"):
        shaper_for("none").set_directions(Recorder(p), p.links[0], (Direction(),) * 2, (Direction(),) * 2)
    assert [ph.title for ph in p.phases()][-1] == "addresses and routes"


def test_kernel_counters_table():
    p = plan("none")
    stats = shaper_for("none").link_stats(Recorder(p))
    cols, rows = shaper_for("none").stats_table(stats)
    assert cols[0:3] == ["link", "end", "tx packets"]
    assert rows[0][:3] == ["d0~d1", "a", "3"]


def test_wire_plan_needs_no_nftables_and_starts_one_process_per_shard():
    p = plan("wire")
    assert not [s for ph in p.phases() for s in ph.steps if s.kind == "sh"]
    wire = next(ph for ph in p.phases() if ph.title == "wire processes")
    assert [s.kind for s in wire.steps] == ["wire"] and wire.steps[0].lines == ["0"]
    cols, rows = shaper_for("wire").stats_table(
        {"d0~d1": {"up": True, "forward": {"received": 5, "forwarded": 4, "lost": 1, "lateness": {"count": 0}}}}
    )
    assert rows[0][:7] == ["d0~d1", "a>b", "True", "None", "5", "4", "1"] and rows[0][-1] == "-"
