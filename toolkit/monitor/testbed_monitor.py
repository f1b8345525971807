"""The monitor of one testbed: its Prometheus, the wire exporter, and their targets.

    mon = start(testbed_id)                    # Prometheus + wire exporter (wire shaper), nodes of
                                               # the testbed's deployment if there is one
    update_targets(testbed_id, "p2pvalue", targets)   # whoever starts/stops nodes calls this
    url(testbed_id)                            # "http://127.0.0.1:PORT" or None
    stop(testbed_id, keep_tsdb=None)

Everything lives in `<testbed state dir>/monitor/`; the processes are journalled in the testbed's
`resources.jsonl` (kind "process", with their start time), so `cnlab down` stops them even if
`stop` is never called, and the TSDB goes with the state directory unless it was moved out.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, RunError
from ..testbed import naming
from ..testbed.state import TestbedState
from .exporter_process import ExporterProcess
from .prometheus import Prometheus, ScrapeTarget, keep_tsdb_dir

# Each scrape of the wire job asks every shard for its `stats`, which holds that shard's loop while
# it serializes all its links (frames due meanwhile leave late), and the exporter turns ~53 series
# per link into text. Past LINKS_AT_FULL_RATE links the wire is scraped every WIRE_SLOW_INTERVAL_S
# (benchmarks/results/monitor_scale.md: FFWien's 395 links took ~0.9 s per scrape on a busy machine).
LINKS_AT_FULL_RATE = 100
WIRE_SLOW_INTERVAL_S = 5.0

# Prometheus's cost is its ingest (benchmarks/results/monitor_scale.md, FFWien: 19 % of a core at
# 8,800 samples/s, 11 % at 4,400/s; 80 % at 1 s), and a node exposes ~180 series. The default
# scrape interval keeps a testbed's Prometheus within 15 % of one core: the shortest of
# SCRAPE_INTERVALS_S at which the nodes stay under NODE_SAMPLES_PER_S_BUDGET (1 s up to 33 nodes).
SERIES_PER_NODE = 180
NODE_SAMPLES_PER_S_BUDGET = 6000
SCRAPE_INTERVALS_S = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0)

NODE_JOB = "p2pvalue"
WIRE_JOB = "wire"
JOBS = (NODE_JOB, WIRE_JOB)

if TYPE_CHECKING:
    from ..deploy.plan import NodePlan


def _state(testbed_id: str) -> TestbedState:
    state = TestbedState(naming.check_id(testbed_id))
    if not state.exists:
        raise InputError(f"no testbed {testbed_id!r} on this machine (see `cnlab status`)")
    return state


def monitor_dir(state: TestbedState) -> Path:
    return state.dir / "monitor"


def wire_sockets(state: TestbedState) -> list[str]:
    """The control sockets of the testbed's wire shards (none unless its shaper is wire)."""
    plan = state.read("plan.json") or {}
    assert isinstance(plan, dict)
    if plan.get("shaper") != "wire":
        return []
    return [s["control_path"] for s in plan.get("wire_shards", [])]


def wire_interval_s(n_links: int, scrape_interval_s: float) -> float:
    """The wire job's scrape interval: the global one for small testbeds, at least
    WIRE_SLOW_INTERVAL_S past LINKS_AT_FULL_RATE links."""
    return scrape_interval_s if n_links <= LINKS_AT_FULL_RATE else max(scrape_interval_s, WIRE_SLOW_INTERVAL_S)


def default_scrape_interval_s(n_nodes: int) -> float:
    """The scrape (and rule evaluation) interval for n_nodes nodes when none is asked for."""
    for interval_s in SCRAPE_INTERVALS_S:
        if n_nodes * SERIES_PER_NODE / interval_s <= NODE_SAMPLES_PER_S_BUDGET:
            return interval_s
    return SCRAPE_INTERVALS_S[-1]


def node_targets(testbed_id: str) -> list[ScrapeTarget]:
    """The metrics endpoints of the testbed's deployed nodes (the deploy package's public API):
    the direct deployer's, else those the Ansible deployer installed (on real devices of a remote
    testbed, or emulated `deploy: ansible` ones); none when nothing is deployed."""
    from ..deploy.deployment import Deployment

    try:
        dep = Deployment.open(testbed_id)
    except (InputError, FileNotFoundError):
        return targets_of_nodes(ansible_nodes(testbed_id))
    return targets_of_nodes(dep.nodes.values())


def ansible_nodes(testbed_id: str) -> list[NodePlan]:
    """The nodes the Ansible deployer installed on the testbed (its record exists once it ran)."""
    from ..deploy.ansible import STATE_FILE
    from ..deploy.ansible_nodes import ansible_devices
    from ..deploy.direct import plan_for
    from ..testbed.testbed import Testbed

    tb = Testbed.open(testbed_id)
    if not (Path(tb.state.dir) / STATE_FILE).exists():
        return []
    plan, _manifest = plan_for(tb)
    return [plan.nodes[d] for d in ansible_devices(tb) if d in plan.nodes]


def sync_node_targets(testbed_id: str) -> bool:
    """Make the node targets follow the deployment: a node stopped on request (or never started)
    is not scraped; a running, paused or crashed one is (so `up` shows the crash and
    P2PvalueNodeDown fires); nodes deployed with Ansible are all scraped, stopped or not. Call it
    after starting or stopping nodes. Returns False when the testbed has no running monitor."""
    if open_monitor(testbed_id) is None:
        return False
    from ..deploy.deployment import Deployment

    if not Deployment.exists(testbed_id):  # Ansible-deployed nodes: every one stays a target
        return update_targets(testbed_id, NODE_JOB, node_targets(testbed_id))
    dep = Deployment.open(testbed_id)
    procs = dep.processes() or {}
    wanted = [n for d, n in dep.nodes.items() if d not in procs or procs[d].state not in ("stopped", "never")]
    return update_targets(testbed_id, NODE_JOB, targets_of_nodes(wanted))


def targets_of_nodes(nodes: Iterable[NodePlan]) -> list[ScrapeTarget]:
    """ScrapeTargets of the nodes' metrics endpoints, labelled with device, domain and site."""
    out = []
    for n in nodes:
        labels = {"device": n.device, "domain": n.domain}
        if n.site:
            labels["site"] = n.site
        out.append(ScrapeTarget(NODE_JOB, f"{n.mgmt_addr}:{n.metrics_port}", labels))
    return out


def start(
    testbed_id: str,
    *,
    nodes: Iterable[ScrapeTarget] | None = None,
    scrape_interval_s: float | None = None,
    host: str = "127.0.0.1",
) -> Prometheus:
    """Start the testbed's Prometheus (and, with the wire shaper, the wire exporter).
    `nodes`: node targets; default: those of the testbed's deployment, if any.
    `scrape_interval_s`: default by the number of nodes (default_scrape_interval_s)."""
    state = _state(testbed_id)
    d = monitor_dir(state)
    d.mkdir(exist_ok=True)
    with state.lock():
        running = Prometheus.open(d)
        if running is not None and running.alive():
            raise RunError(f"testbed {testbed_id} is monitored already: {running.url}")
        targets = list(nodes) if nodes is not None else node_targets(testbed_id)
        if scrape_interval_s is None:
            scrape_interval_s = default_scrape_interval_s(len(targets))
        exporter = None
        sockets = wire_sockets(state)
        try:
            if sockets:
                exporter = ExporterProcess.start(
                    sockets, d / "exporter.json", d / "wire_exporter.log", host=host, journal=state.record
                )
                targets.append(ScrapeTarget(WIRE_JOB, exporter.address, {}))
            plan = state.read("plan.json") or {}
            n_links = len(plan.get("links", [])) if isinstance(plan, dict) else 0
            wire_s = wire_interval_s(n_links, scrape_interval_s)
            mon = Prometheus.start(
                d,
                targets,
                testbed=testbed_id,
                host=host,
                scrape_interval_s=scrape_interval_s,
                journal=state.record,
                extra_jobs=JOBS,
                job_intervals_s={WIRE_JOB: wire_s} if wire_s != scrape_interval_s else None,
            )
        except BaseException:
            if exporter is not None:
                exporter.stop()
            raise
        state.update_meta(monitor_url=mon.url)
    return mon


def open_monitor(testbed_id: str) -> Prometheus | None:
    """The testbed's running Prometheus, or None."""
    mon = Prometheus.open(monitor_dir(_state(testbed_id)))
    return mon if mon is not None and mon.alive() else None


def url(testbed_id: str) -> str | None:
    mon = open_monitor(testbed_id)
    return mon.url if mon else None


def require(testbed_id: str) -> Prometheus:
    mon = open_monitor(testbed_id)
    if mon is None:
        raise RunError(f"testbed {testbed_id} has no running Prometheus: `cnlab monitor start {testbed_id}`")
    return mon


def update_targets(testbed_id: str, job: str, targets: Iterable[ScrapeTarget]) -> bool:
    """Replace one job's targets (file_sd picks the change up within seconds). Returns False when
    the testbed has no running monitor (then there is nothing to update)."""
    mon = open_monitor(testbed_id)
    if mon is None:
        return False
    mon.set_targets([t for t in targets if t.job == job], jobs=[job])
    return True


def stop(testbed_id: str, keep_tsdb: Path | None = None) -> bool:
    """Stop the testbed's Prometheus and wire exporter; with keep_tsdb, move the TSDB there.
    Returns False when nothing was running."""
    state = _state(testbed_id)
    d = monitor_dir(state)
    with state.lock():
        exporter = ExporterProcess.open(d / "exporter.json")
        if exporter is not None:
            exporter.stop()
        mon = Prometheus.open(d)
        if mon is None:  # not running (or stopped before): the TSDB may still be there to keep
            if keep_tsdb is not None and (d / "tsdb").exists():
                keep_tsdb_dir(d / "tsdb", keep_tsdb)
                return True
            return False
        mon.stop(keep_tsdb=keep_tsdb)
        state.update_meta(monitor_url=None)
    return True
