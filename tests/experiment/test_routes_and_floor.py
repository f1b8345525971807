"""Propagation against the delay floor of the path packets take (pure, no network)."""

from __future__ import annotations

import pytest

from toolkit.experiment.accounting import floor_ratios
from toolkit.experiment.routes import Route, routes
from toolkit.topology.loader import load_topology

TRIANGLE = """\
name: tri
defaults: {link: lan}
devices: {a: {}, b: {}, c: {}, d: {}}
links:
  - {between: [a, b], delay_ms: 10}
  - {between: [b, c], delay_ms: 20}
  - {between: [a, c], delay_ms: 50}   # one hop, but slower than going through b
  - {between: [c, d], delay_ms: 5}
"""


def test_routes_follow_the_delay_not_the_hop_count(tmp_path):
    path = tmp_path / "tri.yaml"
    path.write_text(TRIANGLE)
    r = routes(load_topology(path), ["a", "c", "d"])
    assert r[("a", "c")] == Route(hops=2, floor_s=pytest.approx(0.030))
    assert r[("a", "d")] == Route(hops=3, floor_s=pytest.approx(0.035))
    assert r[("d", "a")] == r[("a", "d")]
    assert ("a", "b") not in r  # b runs no node here


def test_floor_ratios():
    samples = [
        {"delay_s": 0.040, "floor_s": 0.030},  # 1.33x the floor, within 1.2 x 30 + 10 = 46 ms
        {"delay_s": 0.092, "floor_s": 0.046},  # 2x, bound 65.2 ms
        {"delay_s": 0.050, "floor_s": 0.0},  # no floor (same device): left out
        {"delay_s": 0.050, "floor_s": None},
    ]
    out = floor_ratios(samples)
    assert out["propagation_floor_ratio_p50"] == pytest.approx((0.040 / 0.030 + 2.0) / 2)
    assert out["propagation_floor_bound_p50"] == pytest.approx((0.040 / 0.046 + 0.092 / 0.0652) / 2)
    assert floor_ratios([])["propagation_floor_ratio_p95"] is None
