"""The live consoles in headless Chromium: each page renders its graphs and tables from a real
Prometheus (real nodes, a real wire testbed), logs no errors, and leaves a screenshot in
tests/artifacts/ (gitignored) for a person to look at."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.testbed.conftest import state_dir, testbeds, two_sites  # noqa: F401 (fixtures)
from toolkit.monitor import panels, testbed_monitor

from .browser import Browser
from .conftest import node_targets, query, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.prometheus, pytest.mark.chromium]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
RANGE = "#pctc%7B%22duration%22%3A300%2C%22endTime%22%3A0%7D"  # a 5-minute graph range


def test_consoles_render_in_chromium(testbeds, local_nodes, tmp_path):  # noqa: F811
    tb = testbeds.up(two_sites(), shaper="wire", wire_shards=2)
    mon = testbed_monitor.start(tb.id, nodes=node_targets(local_nodes))
    wait_for(
        lambda: (
            all(t["health"] == "up" for t in mon.api("targets")["activeTargets"])
            and len(mon.api("targets")["activeTargets"]) == 5
        ),
        20,
        "every target up",
    )
    # some data for every panel: federation traffic and frames through the wire
    nodes = local_nodes
    nodes[0].add_user("alice")
    bob = nodes[1].add_user("bob")
    oid = nodes[0].req("POST", "/api/objects", {"participants": [bob]}, user="alice").json()["id"]
    for i in range(20):
        nodes[0].req("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "k", "value": i}]}, user="alice")
        time.sleep(0.1)
    tb.exec("w1", ["ping", "-c", "40", "-i", "0.05", "-q", "e3"])
    wait_for(lambda: query(mon.url, "link:cnlab_wire_frames_received:rate > 0"), 15, "wire rates recorded")

    ARTIFACTS.mkdir(exist_ok=True)
    browser = Browser(tmp_path / "chromium")
    try:
        for board in panels.BOARDS:
            browser.events.clear()
            browser.goto(f"{mon.url}/consoles/{board.slug}.html{RANGE}")
            # every graph div holds an svg with a drawn path, or says it has no data yet
            done = (
                "Array.from(document.querySelectorAll('.cnlab_graph')).filter("
                "g => g.querySelector('svg path') || g.textContent.includes('No timeseries'))"
            )
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if browser.evaluate(done + ".length") == len(board.graphs):
                    break
                time.sleep(0.5)
            else:
                pending = browser.evaluate(
                    "Array.from(document.querySelectorAll('.cnlab_graph')).filter("
                    "g => !(g.querySelector('svg path') || g.textContent.includes("
                    "'No timeseries'))).map(g => g.id + ': ' + g.textContent.slice(0, 200))"
                )
                pytest.fail(f"{board.slug}: graphs not rendered within 90 s: {pending}; errors {browser.errors()}")
            drawn = browser.evaluate("document.querySelectorAll('.cnlab_graph svg path').length")
            assert drawn >= 1, f"{board.slug}: no graph drew a line"
            text = browser.evaluate("document.body.innerText")
            assert "error executing template" not in text and "error parsing template" not in text, text[:500]
            for t in board.tables:
                rows = browser.evaluate("document.querySelectorAll('table.cnlab_table tr').length")
                assert rows >= 2, f"{board.slug}: table {t.title} has no rows"
            time.sleep(0.5)  # let the last graph finish drawing before the picture
            shot = tmp_path / f"console-{board.slug}.png"
            browser.screenshot(shot)
            assert shot.stat().st_size > 10_000
            shutil.copy(shot, ARTIFACTS / shot.name)
            assert browser.errors() == [], f"{board.slug}: {browser.errors()}"
        # the pages link to each other
        links = browser.evaluate("Array.from(document.querySelectorAll('a.nav-link')).map(a => a.pathname)")
        assert {f"/consoles/{b.slug}.html" for b in panels.BOARDS} <= set(links)
    finally:
        browser.close()
    nodes_table = query(mon.url, 'up{job="p2pvalue"}')
    assert len(nodes_table) == 3
