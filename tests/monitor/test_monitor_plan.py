"""Pure parts of the monitor: config rendering, file_sd documents, export chunking, generated
consoles and dashboards (no Prometheus needed)."""

from __future__ import annotations

import itertools
import json

import pytest
import yaml

from toolkit.errors import InputError
from toolkit.monitor import panels
from toolkit.monitor.export import MAX_POINTS, chunks, parse_since
from toolkit.monitor.prometheus import ScrapeTarget, _fmt_s, file_sd, render_config, rule_files
from toolkit.monitor.testbed_monitor import targets_of_nodes


def test_config_has_one_file_sd_job_per_job_and_the_rules(tmp_path):
    text = render_config(
        listen="127.0.0.1:9999",
        targets_dir=tmp_path,
        jobs=["wire", "p2pvalue", "wire"],
        testbed="tb1",
        scrape_interval_s=1.0,
    )
    cfg = yaml.safe_load(text)
    assert cfg["global"]["scrape_interval"] == "1s"
    assert cfg["global"]["scrape_timeout"] == "900ms"
    assert cfg["global"]["external_labels"] == {"testbed": "tb1"}
    jobs = {c["job_name"]: c for c in cfg["scrape_configs"]}
    assert sorted(jobs) == ["p2pvalue", "prometheus", "wire"]
    assert jobs["wire"]["file_sd_configs"][0]["files"] == [str(tmp_path / "wire.json")]
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["127.0.0.1:9999"]
    assert cfg["rule_files"] == rule_files() and len(cfg["rule_files"]) >= 2


def test_durations_are_prometheus_durations():
    assert [_fmt_s(x) for x in (1.0, 5, 0.5, 0.9, 2.5)] == ["1s", "5s", "500ms", "900ms", "2500ms"]


def test_file_sd_groups_sorted_with_labels():
    doc = file_sd(
        [
            ScrapeTarget("p2pvalue", "198.18.0.3:9108", {"device": "b", "domain": "b.x"}),
            ScrapeTarget("p2pvalue", "198.18.0.2:9108", {"device": "a"}),
        ]
    )
    assert doc == [
        {"targets": ["198.18.0.2:9108"], "labels": {"device": "a"}},
        {"targets": ["198.18.0.3:9108"], "labels": {"device": "b", "domain": "b.x"}},
    ]


@pytest.mark.parametrize(
    "job,address,labels",
    [("p 2", "a:1", {}), ("p", "nohost", {}), ("p", "a:x", {}), ("p", "a:1", {"__x": "1"}), ("p", "a:1", {"a-b": "1"})],
)
def test_bad_targets_are_input_errors(job, address, labels):
    with pytest.raises(InputError):
        ScrapeTarget(job, address, labels)


def test_targets_of_node_plans():
    class Plan:  # the fields the deploy package's NodePlan has
        def __init__(self, device, site):
            self.device, self.domain, self.site = device, f"{device}.lab", site
            self.mgmt_addr, self.metrics_port = "10.77.0.5", 9108

    got = targets_of_nodes([Plan("w1", "west"), Plan("e1", None)])
    assert got[0] == ScrapeTarget("p2pvalue", "10.77.0.5:9108", {"device": "w1", "domain": "w1.lab", "site": "west"})
    assert got[1].labels == {"device": "e1", "domain": "e1.lab"}


def test_chunks_respect_the_point_limit_and_cover_the_range():
    step = 1.0
    parts = chunks(0, 30_000, step)
    assert len(parts) == 3
    assert parts[0] == (0, MAX_POINTS - 1)
    for (a, b), (c, _) in itertools.pairwise(parts):
        assert (b - a) / step + 1 <= MAX_POINTS and c == b + step
    assert parts[-1][1] == 30_000
    assert chunks(5, 5, 1) == [(5, 5)]
    with pytest.raises(InputError):
        chunks(10, 5, 1)
    with pytest.raises(InputError):
        chunks(0, 5, 0.0005)


def test_since():
    assert parse_since("15m", 1000.0) == 100.0
    assert parse_since("90s", 1000.0) == 910.0
    assert parse_since("123.5", 1000.0) == 123.5
    with pytest.raises(InputError):
        parse_since("yesterday", 1000.0)


def test_generated_consoles_and_dashboards_are_current():
    stale = [str(p) for p, text in panels.generated_files().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"run python -m toolkit.monitor.panels --write: {stale}"


@pytest.mark.parametrize("board", panels.BOARDS, ids=lambda b: b.slug)
def test_grafana_dashboard_is_well_formed(board):
    dash = json.loads(json.dumps(panels.render_grafana(board)))
    assert dash["uid"] == f"cnlab-{board.slug}" and dash["schemaVersion"] >= 36
    assert dash["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    n_graphs = sum(1 for p in dash["panels"] if p["type"] == "timeseries")
    assert n_graphs == len(board.graphs)
    assert sum(1 for p in dash["panels"] if p["type"] == "stat") == len(board.stats)
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert p["targets"] and all(
            t["expr"] and "$SEL" not in t["expr"] and "$BY" not in t["expr"] for t in p["targets"]
        )
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    # panels do not overlap
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_consoles_link_to_each_other():
    lib = (panels.MONITORING_DIR / "console_libraries" / "cnlab.lib").read_text()
    for b in panels.BOARDS:
        assert f"/consoles/{b.slug}.html" in lib
        page = (panels.MONITORING_DIR / "consoles" / f"{b.slug}.html").read_text()
        assert '{{ template "head" . }}' in page and '{{ template "tail" }}' in page


def test_a_big_wire_is_scraped_less_often(tmp_path):
    from toolkit.monitor.testbed_monitor import LINKS_AT_FULL_RATE, WIRE_SLOW_INTERVAL_S, wire_interval_s

    assert wire_interval_s(7, 1.0) == 1.0
    assert wire_interval_s(LINKS_AT_FULL_RATE + 1, 1.0) == WIRE_SLOW_INTERVAL_S
    assert wire_interval_s(395, 10.0) == 10.0
    cfg = yaml.safe_load(
        render_config(
            listen="127.0.0.1:1",
            targets_dir=tmp_path,
            jobs=["wire", "p2pvalue"],
            testbed="t",
            job_intervals_s={"wire": 5.0},
        )
    )
    jobs = {c["job_name"]: c for c in cfg["scrape_configs"]}
    assert jobs["wire"]["scrape_interval"] == "5s" and jobs["wire"]["scrape_timeout"] == "4500ms"
    assert "scrape_interval" not in jobs["p2pvalue"]


def test_the_default_interval_grows_with_the_federation():
    from toolkit.monitor.testbed_monitor import default_scrape_interval_s

    assert default_scrape_interval_s(12) == 1.0  # the demo
    assert default_scrape_interval_s(33) == 1.0
    assert default_scrape_interval_s(34) == 2.0
    assert default_scrape_interval_s(246) == 10.0  # FFWien: 5 s measured 19 % of a core
    assert default_scrape_interval_s(1000) == 30.0
    assert default_scrape_interval_s(10**6) == 30.0


def test_ranges_are_widened_to_hold_two_samples(tmp_path):
    from toolkit.monitor.prometheus import min_range_s, widen_ranges, write_web_files

    assert min_range_s(1.0) == 3 and min_range_s(1.0, {"wire": 5.0}) == 15 and min_range_s(10.0) == 30
    expr = "rate(a[15s]) / deriv(b[10s]) + max_over_time(c[2m]) + d[1h:10s]"
    assert widen_ranges(expr, 15) == expr.replace("[10s]", "[15s]")
    assert widen_ranges(expr, 30) == "rate(a[30s]) / deriv(b[30s]) + max_over_time(c[2m]) + d[1h:10s]"
    write_web_files(tmp_path, 30)
    rules = (tmp_path / "rules" / "recording.yml").read_text()
    assert "[15s]" not in rules and "[30s]" in rules
    assert "[30s]" in (tmp_path / "consoles" / "links.html").read_text()
    assert (tmp_path / "console_libraries" / "cnlab.lib").read_text() == (
        panels.MONITORING_DIR / "console_libraries" / "cnlab.lib"
    ).read_text()
    # at the default interval the copies are the originals
    write_web_files(tmp_path / "one", min_range_s(1.0, {"wire": 5.0}))
    for sub, pattern in (("rules", "*.yml"), ("consoles", "*.html")):
        for src in (panels.MONITORING_DIR / sub).glob(pattern):
            assert (tmp_path / "one" / sub / src.name).read_text() == src.read_text().replace("[10s]", "[15s]")
