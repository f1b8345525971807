"""The wire's pure parts: shaping decisions, spec checking, sharding, histograms (no namespaces)."""

from __future__ import annotations

import random

import pytest

from toolkit.errors import InputError
from toolkit.topology.direction import direction_from_dict
from toolkit.topology.model import Direction
from toolkit.wire.launch import expected_load, split_links
from toolkit.wire.shaping import (
    LossModel,
    Shaper,
    Verdict,
    make_rng,
)
from toolkit.wire.spec import parse_spec
from toolkit.wire.stats import Lateness, lateness_quantile


def test_independent_loss_rate() -> None:
    model = LossModel(20.0, 1.0, random.Random(1))
    lost = sum(model.lose() for _ in range(50_000))
    assert 0.19 < lost / 50_000 < 0.21


def test_bursty_loss_rate_and_burst_length() -> None:
    model = LossModel(10.0, 4.0, random.Random(2))
    seq = [model.lose() for _ in range(200_000)]
    assert 0.09 < sum(seq) / len(seq) < 0.11
    bursts, run = [], 0
    for lost in seq:
        if lost:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    assert 3.6 < sum(bursts) / len(bursts) < 4.4


def test_seeded_randomness_repeats_and_differs_per_direction() -> None:
    def drops(which: str) -> list[bool]:
        model = LossModel(30.0, 1.0, make_rng(42, "a~b", which))
        return [model.lose() for _ in range(200)]

    assert drops("forward") == drops("forward")
    assert drops("forward") != drops("reverse")


def test_jitter_keeps_fifo_unless_reorder() -> None:
    fifo = Shaper(Direction(delay_ms=10, jitter_ms=5), random.Random(3))
    times = [fifo.admit(i * 0.0005, 100) for i in range(2000)]
    assert all(isinstance(t, float) for t in times)
    assert times == sorted(times)  # type: ignore[type-var]
    free = Shaper(Direction(delay_ms=10, jitter_ms=5, reorder=True), random.Random(3))
    times = [free.admit(i * 0.0005, 100) for i in range(2000)]
    assert times != sorted(times)  # type: ignore[type-var]


def test_rate_serializes_and_bounds_the_queue() -> None:
    shaper = Shaper(Direction(rate_kbit=1000), random.Random(4))  # 1 Mbit/s: 1000 B = 8 ms
    first = shaper.admit(0.0, 1000)
    second = shaper.admit(0.0, 1000)
    assert first == pytest.approx(0.008)
    assert second == pytest.approx(0.016)
    verdicts = [shaper.admit(0.0, 1000) for _ in range(30)]
    sent = [v for v in verdicts if isinstance(v, float)]
    # The backlog may reach 100 ms (12 frames of 8 ms, counting the two above) before drops.
    assert len(sent) == 11
    assert verdicts.count(Verdict.QUEUE_DROP) == 19


def test_down_drops_everything() -> None:
    shaper = Shaper(Direction(), random.Random(5), up=False)
    assert shaper.admit(0.0, 60) is Verdict.DOWN


def test_direction_from_dict_checks_and_keeps_other_fields() -> None:
    base = Direction(delay_ms=10, loss_pct=1, rate_kbit=500)
    changed = direction_from_dict({"delay_ms": 20}, base)
    assert changed == Direction(delay_ms=20, loss_pct=1, rate_kbit=500)
    assert direction_from_dict({"rate_kbit": None}, base).rate_kbit is None
    for bad in (
        {"delay_ms": -1},
        {"loss_pct": 101},
        {"loss_burst": 0.5},
        {"nope": 1},
        {"reorder": 1},
        {"rate_kbit": 0},
        {"jitter_ms": "3"},
    ):
        with pytest.raises(ValueError):
            direction_from_dict(bad, base)


def test_parse_spec_reports_every_problem() -> None:
    good = parse_spec({"seed": 1, "links": [{"id": "x~y", "a_if": "xa", "b_if": "ya", "forward": {"delay_ms": 5}}]})
    assert good.links[0].forward.delay_ms == 5 and good.links[0].up
    with pytest.raises(InputError) as err:
        parse_spec(
            {
                "links": [
                    {"id": "x", "a_if": "a" * 16, "b_if": "b"},
                    {"id": "x", "a_if": "b", "b_if": "c", "forward": {"delay_ms": -1}},
                ]
            }
        )
    text = str(err.value)
    assert "1-15 characters" in text and "duplicate id" in text and "used twice" in text and "delay_ms" in text


def test_split_links_balances_by_load() -> None:
    links = [
        {"id": f"l{i}", "forward": {"rate_kbit": r}, "reverse": {"rate_kbit": r}}
        for i, r in enumerate([100_000, 1000, 1000, 50_000, 50_000, 1000])
    ]
    groups = split_links(links, 2)
    loads = sorted(sum(expected_load(link) for link in g) for g in groups)
    assert loads == [202_000, 204_000]
    assert sorted(link["id"] for g in groups for link in g) == [f"l{i}" for i in range(6)]
    assert split_links(links[:1], 4) == [links[:1]]
    assert split_links([], 2) == []


def test_lateness_histogram() -> None:
    hist = Lateness()
    for late in [0.00001] * 90 + [0.003] * 9 + [0.5]:
        hist.observe(late)
    d = hist.to_dict()
    assert d["count"] == 100 and d["max_s"] == 0.5
    assert d["cumulative"][-1] == 100  # type: ignore[index]
    assert lateness_quantile(d, 0.5) == 0.00005
    assert lateness_quantile(d, 0.99) == 0.005
    assert lateness_quantile(d, 1.0) == 0.5
