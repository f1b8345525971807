"""`cnlab run` end to end as root: real namespaces, the wire, real nodes deployed by the fork
launcher, a real Prometheus, the report opened in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from toolkit.experiment.report import PLOTS
from toolkit.experiment.rundir import FILES

from ..monitor.browser import FLAGS

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"

pytestmark = [pytest.mark.netns, pytest.mark.prometheus]


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("CNLAB_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def only_run(runs: Path) -> Path:
    dirs = [d for d in runs.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def no_testbed_left(cnlab) -> None:
    cp = cnlab("status", "--json")
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == [], cp.stdout


def render_in_chromium(report: Path, workdir: Path, screenshot: Path) -> str:
    """Print the DOM after load and take a screenshot; returns the DOM (stderr is checked too)."""
    chromium = shutil.which("chromium")
    assert chromium
    common = [
        chromium,
        *FLAGS,
        f"--user-data-dir={workdir / 'chromium'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert console_errors == [], console_errors
    shot = subprocess.run(
        [*common, f"--screenshot={screenshot}", "--window-size=1100,3800", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0 and screenshot.stat().st_size > 50_000, shot.stderr[-2000:]
    return dom.stdout


@pytest.mark.chromium
def test_the_demo_experiment_passes_and_its_report_renders(cnlab, state):
    runs = state / "runs"
    cp = cnlab(
        "run",
        str(REPO / "experiments" / "demo.yaml"),
        "--runs-dir",
        str(runs),
        "--junit",
        str(state / "junit.xml"),
        timeout=600,
    )
    run = only_run(runs)
    assert cp.returncode == 0, cp.stdout + cp.stderr + (run / "summary.json").read_text()
    for name in FILES:
        assert (run / name).stat().st_size > 0, name
    assert (run / "metrics" / "series.json").exists() and (run / "metrics" / "outbox_depth_sum.csv").exists()
    assert any((run / "tsdb").iterdir())
    nodes = sorted(p.name for p in (run / "nodes").iterdir())
    assert len(nodes) == 12 and all((run / "nodes" / n / "node.log").exists() for n in nodes)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["verdict"] == "pass" and summary["lost_updates"] == 0
    assert summary["acknowledged_updates"] > 50 and summary["convergence"][0]["converged_s"] is not None
    checks = json.loads((run / "checks.json").read_text())
    assert checks and all(c["verdict"] == "pass" for c in checks)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["topology_hash"].startswith("sha256:")
    assert manifest["shaper"] == "wire" and manifest["link_fidelity"]["available"]
    assert manifest["link_fidelity"]["frames"] > 0 and manifest["doctor"]
    timeline = [json.loads(x) for x in (run / "timeline.jsonl").read_text().splitlines()]
    assert [e["name"] for e in timeline] == ["cut", "heal"] and all(e["ok"] for e in timeline)
    assert all(e["achieved_t"] >= e["planned_t"] for e in timeline)
    # the cut between the two sites left exactly the two sites as islands
    assert sorted(map(sorted, timeline[0]["islands"])) == sorted(map(sorted, timeline[0]["groups"]))
    # where the partition and the heal spent their time (links, routes computed and applied)
    assert all(e["testbed_s"]["route_changes"] > 0 and e["testbed_s"]["apply_s"] >= 0 for e in timeline)
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    kinds = {h["type"] for h in history}
    assert {"invoke", "ok"} <= kinds
    junit = ET.parse(state / "junit.xml").getroot()
    assert len(junit.findall(".//testcase")) == len(checks) and not junit.findall(".//failure")
    # the intended actions are the seeded plan, action for action
    from toolkit.experiment.loader import load_experiment
    from toolkit.experiment.workload import plan_workload

    planned = plan_workload(load_experiment(REPO / "experiments" / "demo.yaml")).log_lines()
    assert (run / "plan.jsonl").read_text().splitlines() == planned
    invoked = [h["seq"] for h in history if h["type"] == "invoke"]
    assert invoked == [json.loads(x)["seq"] for x in planned]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dom = render_in_chromium(run / "report.html", state, ARTIFACTS / "experiment-report.png")
    assert 'id="verdict"' in dom and "PASS" in dom
    for plot in PLOTS:
        assert f'id="plot-{plot}"' in dom and "data:image/png;base64," in dom, plot
    assert dom.count("data:image/png;base64,") == len(PLOTS)
    assert "http://" not in (run / "report.html").read_text().replace("http://www.w3.org", "")  # offline
    no_testbed_left(cnlab)
    cp = cnlab("runs", "--runs-dir", str(runs), "--json")
    assert json.loads(cp.stdout)[0]["verdict"] == "pass"
    before = (run / "report.html").stat().st_mtime_ns
    cp = cnlab("report", str(run))
    assert cp.returncode == 0 and (run / "report.html").stat().st_mtime_ns > before, cp.stderr


SMALL = """\
name: small
topology: {topology}
seed: {seed}
warmup_s: 2
duration_s: 8
quiesce_s: 15
workload: {{model: constant, rate_per_s: 10, objects: 4, span: 3}}
timeline:
  - {{at_s: 2, link: {{between: [a, b], set: {{delay_ms: 40}}}}}}
checks:
  - lost_updates == 0
  - availability > 1.5
"""


def test_a_failing_check_exits_1_the_seed_reproduces_and_ctrl_c_leaves_a_partial_report(cnlab, state):
    import signal
    import sys
    import time

    topology = REPO / "experiments" / "topologies" / "line-3.yaml"
    exp = state / "small.yaml"
    exp.write_text(SMALL.format(topology=topology, seed=5))
    runs = state / "runs"
    cp = cnlab("run", str(exp), "--runs-dir", str(runs), "--junit", str(state / "junit.xml"), timeout=300)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    run = only_run(runs)
    junit = ET.parse(state / "junit.xml").getroot()
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    assert cases["availability > 1.5"].find("failure") is not None
    assert cases["lost_updates == 0"].find("failure") is None
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verdict"] == "fail" and summary["lost_updates"] == 0 and not summary["incomplete"]
    assert "FAIL" in (run / "report.html").read_text()
    no_testbed_left(cnlab)

    # Run it again with another seed in the file but --seed 5, and press Ctrl-C while it runs:
    # the intended actions are the same, the run stops, tears down and leaves a partial report.
    exp.write_text(SMALL.format(topology=topology, seed=99).replace("duration_s: 8", "duration_s: 120"))
    runs2 = state / "runs2"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "cnlab"), "run", str(exp), "--seed", "5", "--runs-dir", str(runs2)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = ""
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the workload runs
            seen += line
            if "== workload" in line:
                break
        time.sleep(12)  # past the 10 s the first run took
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, seen + rest
    run2 = only_run(runs2)
    assert json.loads((run2 / "manifest.json").read_text())["seed"] == 5
    plan1 = (run / "plan.jsonl").read_text().splitlines()
    plan2 = (run2 / "plan.jsonl").read_text().splitlines()
    assert plan2[: len(plan1)] == plan1 and len(plan2) > len(plan1)  # same seed, longer run: same prefix

    def invoked(r: Path) -> list[tuple]:
        lines = [json.loads(x) for x in (r / "history.jsonl").read_text().splitlines()]
        return [(x["seq"], x["op"], x["uid"], x["object"]) for x in lines if x["type"] == "invoke"]

    ops1, ops2 = invoked(run), invoked(run2)
    assert len(ops1) > 50 and ops2[: len(ops1)] == ops1
    summary2 = json.loads((run2 / "summary.json").read_text())
    assert summary2["incomplete"] is True and summary2["verdict"] == "incomplete"
    assert summary2["operations"] < len(plan2) and summary2["lost_updates"] == 0  # what ran was accounted
    assert "INCOMPLETE" in (run2 / "report.html").read_text()
    assert ET.parse(run2 / "junit.xml").getroot().find(".//error") is not None
    no_testbed_left(cnlab)


def test_bad_input_exits_2_with_positions(cnlab, tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text("name: bad\ntopology: nowhere.yaml\nduration_s: 5\nworkload: {model: cbpp, users: 2}\n")
    cp = cnlab("run", str(exp))
    assert cp.returncode == 2
    assert f"{exp}:2:" in cp.stderr and f"{exp}:4:" in cp.stderr and "Traceback" not in cp.stderr
