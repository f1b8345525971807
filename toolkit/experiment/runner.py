"""The one impure orchestrator of an experiment:

    up -> deploy -> monitor -> workload set-up -> warm-up + workload with the fault timeline ->
    quiesce -> read every replica -> checks -> export -> node logs, TSDB -> down -> report

Everything it learns goes into the run directory. Progress is reported through a callback
`progress(event, info)`; nothing here prints. Ctrl-C (SIGINT) once stops the workload, accounts
for what happened, tears down and writes a partial report marked incomplete; twice aborts. Before
the workload (up, deploy, workload set-up) the first Ctrl-C stops at once.

Where it runs is a `platforms.Platform`: an emulated testbed on this machine, or real devices
(kind: ssh) reached over SSH; what a platform cannot do is refused before anything starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import platform
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import InputError, RunError
from .checks import Verdict, evaluate, overall
from .driver import Interrupted, Outcome, drive
from .endpoints import from_deployment
from .history import History
from .model import Experiment
from .platforms import Platform, platform_for
from .routes import routes
from .rundir import new_run_dir, write_json, write_junit
from .timeline import TimelineRunner
from .workload import plan_workload

Progress = Callable[[str, dict[str, Any]], None]
REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunOptions:
    keep: bool = False
    seed: int | None = None
    junit: Path | None = None
    runs_root: Path | None = None
    testbed_id: str | None = None


@dataclass
class RunResult:
    dir: Path
    verdict: str  # pass, fail, unknown, incomplete, error
    verdicts: list[Verdict] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    testbed_id: str | None = None


class _Interrupt:
    """While the workload runs, the first SIGINT asks it to stop gracefully (account, report) and
    the second aborts; outside the workload (up, deploy) SIGINT aborts that step at once. Either
    way the testbed is torn down and a partial report written."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.previous: Any = None
        self.previous_term: Any = None
        self.graceful = False

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
            self.previous_term = signal.signal(signal.SIGTERM, self._handle)  # e.g. `timeout`, CI cancelling
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set() or not self.graceful:
            self.event.set()
            raise KeyboardInterrupt
        self.event.set()

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            signal.signal(signal.SIGTERM, self.previous_term)

    def __call__(self) -> bool:
        return self.event.is_set()


def write_line(f: IO[str], record: dict[str, Any]) -> None:
    """One JSON line (timeline.jsonl)."""
    f.write(json.dumps(record, sort_keys=True) + "\n")


def topology_hash(exp: Experiment) -> str:
    from ..topology.dump import to_yaml

    return "sha256:" + hashlib.sha256(to_yaml(exp.topology).encode()).hexdigest()


def git_commit() -> str | None:
    cp = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    if cp.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return cp.stdout.strip() + ("-dirty" if dirty else "")


def versions() -> dict[str, Any]:
    from importlib import metadata

    from .. import __version__

    out: dict[str, Any] = {"cnlab": __version__, "python": platform.python_version(), "kernel": platform.release()}
    for dist in ("p2pvalue-node", "aiohttp", "pycrdt", "pydantic", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    prom = shutil.which("prometheus")
    if prom:
        cp = subprocess.run([prom, "--version"], capture_output=True, text=True, check=False)
        out["prometheus"] = (cp.stdout or cp.stderr).splitlines()[0] if (cp.stdout or cp.stderr) else None
    return out


def link_fidelity(stats: dict[str, Any]) -> dict[str, Any]:
    """How late the shaper released frames, merged over every link direction (the wire's
    lateness histograms), with the worst links. Empty for shapers that report no lateness."""
    from ..wire.stats import lateness_quantile

    hists: list[tuple[str, dict[str, Any]]] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            if "lateness" in node and isinstance(node["lateness"], dict) and "cumulative" in node["lateness"]:
                hists.append((prefix, node["lateness"]))
                return
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)

    walk("", stats)
    if not hists:
        return {"available": False}
    bounds = hists[0][1]["le_s"]
    cumulative = [sum(int(h["cumulative"][i]) for _, h in hists) for i in range(len(bounds))]
    merged = {
        "le_s": bounds,
        "cumulative": cumulative,
        "count": sum(int(h["count"]) for _, h in hists),
        "sum_s": sum(float(h["sum_s"]) for _, h in hists),
        "max_s": max(float(h["max_s"]) for _, h in hists),
    }
    per_link = sorted(
        ((name, lateness_quantile(h, 0.99), int(h["count"])) for name, h in hists if h["count"]), key=lambda x: -x[1]
    )
    return {
        "available": True,
        "frames": merged["count"],
        "histogram": merged,
        "p50_s": lateness_quantile(merged, 0.5),
        "p99_s": lateness_quantile(merged, 0.99),
        "max_s": merged["max_s"],
        "mean_s": merged["sum_s"] / merged["count"] if merged["count"] else 0.0,
        "worst_links_p99": [{"direction": n, "p99_s": q, "frames": c} for n, q, c in per_link[:10]],
    }


def promql_value(url: str, query: str) -> tuple[float | None, str]:
    from ..monitor.prometheus import api_get

    try:
        data = api_get(url, "query", query=query)
    except Exception as exc:  # noqa: BLE001 - the check becomes unknown, with the reason
        return None, f"query failed: {exc}"
    result = data.get("result")
    if data.get("resultType") == "scalar":
        return float(result[1]), ""
    if not result:
        return None, "the query returned no series"
    if len(result) > 1:
        return None, f"the query returned {len(result)} series; aggregate it to one"
    return float(result[0]["value"][1]), ""


def run_experiment(exp: Experiment, options: RunOptions | None = None, progress: Progress | None = None) -> RunResult:
    options = options or RunOptions()
    say = progress or (lambda _e, _i: None)
    seed = exp.seed if options.seed is None else options.seed
    runs_on = platform_for(exp.topology)  # emulated, or real devices over SSH; mixed kinds: InputError
    run_dir = new_run_dir(exp.name, options.runs_root)
    wall0 = time.time()
    say("run_dir", {"path": str(run_dir)})
    plan = plan_workload(exp, seed)
    (run_dir / "plan.jsonl").write_text("\n".join(plan.log_lines()) + ("\n" if plan.actions else ""))
    from .. import capabilities

    findings = capabilities.probe()
    manifest: dict[str, Any] = {
        "experiment": exp.name,
        "description": exp.description,
        "source": str(exp.source),
        "experiment_file": exp.raw,
        "topology": exp.topology.name,
        "topology_ref": exp.topology_ref,
        "topology_hash": topology_hash(exp),
        "devices": len(exp.topology.devices),
        "links": len(exp.topology.links),
        "nodes": len(exp.nodes),
        "seed": seed,
        "duration_s": exp.duration_s,
        "warmup_s": exp.warmup_s,
        "workload": exp.workload.model_dump(),
        "workload_info": plan.info,
        "actions_planned": len(plan.actions),
        "timeline": [e.__dict__ for e in exp.timeline],
        "checks": [c.name for c in exp.checks],
        "versions": versions(),
        "git_commit": git_commit(),
        "started": wall0,
        "doctor": [vars(c) for c in findings.checks],
        "platform": runs_on.name,
        "phase": "starting",
    }
    write_json(run_dir / "manifest.json", manifest)
    from ..monitor import testbed_monitor
    from ..testbed.testbed import Testbed

    outcome: Outcome | None = None
    verdicts: list[Verdict] = []
    error: str | None = None
    fidelity: dict[str, Any] = {}
    testbed = None
    dep = None
    refused: InputError | None = None
    timeline_file = open(run_dir / "timeline.jsonl", "a", encoding="utf-8", buffering=1)
    history = History(t0=time.time(), warmup_s=exp.warmup_s, path=run_dir / "history.jsonl")
    interrupt = _Interrupt()
    try:
        with interrupt:
            say("phase", {"phase": "up", "devices": len(exp.topology.devices)})
            testbed = Testbed.up(
                exp.topology,
                options.testbed_id,
                progress=lambda what, done, total: say(
                    "step", {"phase": "up", "what": what, "done": done, "total": total}
                ),
            )
            manifest.update(
                testbed_id=testbed.id, shaper=testbed.plan.shaper, routing=testbed.plan.routing, phase="deploying"
            )
            write_json(run_dir / "manifest.json", manifest)
            problems = runs_on.preflight(testbed, exp)  # what the devices `up` probed cannot do
            if problems:
                refused = InputError(problems)
                raise refused
            say("phase", {"phase": "deploy", "nodes": len(exp.nodes), "testbed": testbed.id})
            dep = runs_on.deploy(
                testbed,
                exp,
                lambda what, done, total: say("step", {"phase": "deploy", "what": what, "done": done, "total": total}),
            )
            say("phase", {"phase": "monitor"})
            mon = testbed_monitor.start(testbed.id)
            manifest.update(prometheus=mon.url, deploy_mode=dep.mode, phase="running")
            write_json(run_dir / "manifest.json", manifest)
            endpoints = from_deployment(dep, exp.nodes)
            timeline = TimelineRunner(
                exp.timeline,
                runs_on.faults(testbed),
                exp.warmup_s,
                history.now,
                say,
                log=lambda r: write_line(timeline_file, r),
            )
            say("phase", {"phase": "setup", "users": len(plan.users), "objects": len(plan.objects)})
            interrupt.graceful = True
            outcome = asyncio.run(
                drive(
                    plan,
                    endpoints,
                    history,
                    timeline=timeline,
                    quiesce_s=exp.quiesce_s,
                    timeout_s=exp.workload.timeout_s,
                    routes=routes(exp.topology, exp.nodes),
                    progress=say,
                    should_stop=interrupt,
                    observe=exp.workload.observe,
                )
            )
            interrupt.graceful = False
            say("phase", {"phase": "checks"})
            verdicts = evaluate(exp.checks, outcome.results, lambda q: promql_value(mon.url, q))
            say("phase", {"phase": "export"})
            try:
                exported = testbed_monitor_export(
                    mon.url, run_dir / "metrics", outcome.t0 - exp.warmup_s - 5, outcome.t0 + outcome.end_t + 2
                )
                manifest["metrics_export"] = exported
            except Exception as exc:  # noqa: BLE001 - recorded; the report says the metrics are missing
                manifest["metrics_export"] = {"error": str(exc)}
            fidelity = link_fidelity(testbed.link_stats())
    except (KeyboardInterrupt, Interrupted):
        interrupt.event.set()
    except Exception as exc:
        if exc is not refused:  # refused before anything ran: exit 2 below, no run directory
            error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, RunError) and not hasattr(exc, "problems"):
                import traceback

                (run_dir / "error.txt").write_text(traceback.format_exc())
    finally:
        history.close()
        timeline_file.close()
        if dep is not None:  # also after an error: the nodes' logs say what went wrong
            try:
                errors = runs_on.collect_logs(run_dir / "nodes")
                if errors:
                    manifest["node_logs_error"] = "; ".join(errors)
            except (OSError, RunError) as exc:
                manifest["node_logs_error"] = str(exc)
        if testbed is not None:
            say("phase", {"phase": "down" if not options.keep else "keep", "testbed": testbed.id})
            teardown(testbed, runs_on, run_dir, options.keep and refused is None, manifest)
    if refused is not None:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise refused
    incomplete = error is not None or outcome is None or outcome.interrupted or interrupt()
    result = finish(exp, run_dir, manifest, outcome, verdicts, fidelity, wall0, incomplete, error, options)
    result.testbed_id = testbed.id if testbed is not None else None
    return result


def testbed_monitor_export(url: str, out_dir: Path, start: float, end: float) -> dict[str, Any]:
    from ..monitor.export import export

    res = export(url, out_dir, start, end)
    return {"files": [p.name for p in res.files], "empty": res.empty, "points": res.points, "step_s": res.step_s}


def teardown(testbed: Any, runs_on: Platform, run_dir: Path, keep: bool, manifest: dict[str, Any]) -> None:
    from ..monitor import testbed_monitor

    if keep:
        manifest["kept_testbed"] = testbed.id
        manifest["tsdb"] = "still in the live testbed's Prometheus (--keep)"
        return
    try:
        testbed_monitor.stop(testbed.id, keep_tsdb=run_dir / "tsdb")
    except Exception as exc:  # noqa: BLE001 - down below still cleans up
        manifest["tsdb_error"] = str(exc)
    try:
        runs_on.remove_nodes(testbed)  # emulated: the launcher stops; real devices: the cleanup role
    except Exception as exc:  # noqa: BLE001 - recorded; down below says what is left
        manifest["shutdown_error"] = str(exc)
    try:
        testbed.down()
    except InputError as exc:  # nodes left on real devices: the testbed stays for `cnlab down ID`
        manifest["kept_testbed"], manifest["down_error"] = testbed.id, str(exc)


def finish(
    exp: Experiment,
    run_dir: Path,
    manifest: dict[str, Any],
    outcome: Outcome | None,
    verdicts: list[Verdict],
    fidelity: dict[str, Any],
    wall0: float,
    incomplete: bool,
    error: str | None,
    options: RunOptions,
) -> RunResult:
    from .report import write_report

    wall_s = time.time() - wall0
    verdict = overall(verdicts) if verdicts else "unknown"
    if incomplete:
        verdict = "incomplete"  # a partial run proves nothing: never a pass
    if error is not None:
        verdict = "error"
    results = outcome.results if outcome else {}
    manifest.update(phase="done", finished=time.time(), link_fidelity=fidelity, incomplete=incomplete, error=error)
    write_json(run_dir / "manifest.json", manifest)
    write_json(run_dir / "checks.json", [v.to_json() for v in verdicts])
    summary = {
        "experiment": exp.name,
        "verdict": verdict,
        "incomplete": incomplete,
        "error": error,
        "checks_count": len(verdicts),
        "checks_failed": sum(v.verdict == "fail" for v in verdicts),
        "checks_unknown": sum(v.verdict == "unknown" for v in verdicts),
        "wall_s": round(wall_s, 2),
        "seed": manifest.get("seed"),
        **{k: v for k, v in results.items() if k not in ("propagation", "lost", "diverged", "unreadable_replicas")},
        "lost": results.get("lost", [])[:50],
        "diverged": results.get("diverged", [])[:50],
        "contributions": (outcome.contributions if outcome else {}),
        "link_fidelity": {k: v for k, v in fidelity.items() if k != "histogram"},
    }
    write_json(run_dir / "summary.json", summary)
    if outcome is not None:
        write_json(run_dir / "propagation.json", results.get("propagation", []))
    write_junit(run_dir / "junit.xml", exp.name, verdicts, wall_s, incomplete)
    if options.junit is not None:
        shutil.copyfile(run_dir / "junit.xml", options.junit)
    write_report(run_dir)
    return RunResult(run_dir, verdict, verdicts, summary)
