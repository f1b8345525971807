"""The measured part of a run, independent of how the nodes were brought up: set the workload up,
run it and the fault timeline side by side, let the federation quiesce, read every replica and
account. The runner calls it with a testbed's nodes; tests call it with local nodes too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .accounting import account, read_contributions, read_replicas
from .endpoints import Endpoint
from .history import History
from .looplag import LoopLag
from .routes import Route
from .timeline import TimelineRunner
from .workload.engine import Engine
from .workload.plan import WorkloadPlan

Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class Outcome:
    results: dict[str, Any]
    timeline: list[dict[str, Any]]
    history: History
    contributions: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    t0: float = 0.0  # wall clock of the workload start
    end_t: float = 0.0


async def drive(
    plan: WorkloadPlan,
    endpoints: dict[str, Endpoint],
    history: History,
    *,
    timeline: TimelineRunner | None = None,
    quiesce_s: float = 30.0,
    timeout_s: float = 10.0,
    routes: dict[tuple[str, str], Route] | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    observe: bool = True,
) -> Outcome:
    """Raises Interrupted when should_stop() turns true during set-up (nothing to account yet)."""
    progress = progress or (lambda _e, _i: None)
    interrupted = False
    async with Engine(plan, endpoints, history, timeout_s=timeout_s, progress=progress) as engine:
        await _interruptible(engine.setup(), should_stop)
        assert engine.observers is not None
        if not observe:  # subscribed only until set-up settled: propagation is not measured
            await engine.observers.close()
        history.t0 = time.time()  # the clock starts once every initial object is everywhere
        history.note(event="workload_start", wall=history.t0)
        progress("phase", {"phase": "workload", "actions": len(plan.actions)})
        tl_task = asyncio.create_task(timeline.run()) if timeline is not None else None
        lag = LoopLag().start()
        try:
            await engine.run(should_stop)
            interrupted = engine.stopped
            # a fault still being made (a partition of a large testbed takes minutes) finishes
            # before the quiesce clock starts: a heal cut short would leave nothing to converge
            while tl_task is not None and not tl_task.done() and not interrupted:
                interrupted = should_stop()
                await asyncio.wait({tl_task}, timeout=0.25)
            progress("phase", {"phase": "quiesce", "quiesce_s": quiesce_s})
            deadline = time.monotonic() + quiesce_s
            while not interrupted and time.monotonic() < deadline:
                if (tl_task is None or tl_task.done()) and observe and _all_visible(engine):
                    break
                if should_stop():
                    interrupted = True
                    break
                await asyncio.sleep(0.25)
        finally:
            await lag.stop()
            if tl_task is not None:
                if not tl_task.done():
                    tl_task.cancel()
                await asyncio.gather(tl_task, return_exceptions=True)
        end_t = history.now()
        progress("phase", {"phase": "accounting"})
        objects = await _objects(engine)
        replicas = await read_replicas(engine, objects)
        assert engine.observers is not None
        results = account(
            history.ops,
            replicas,
            engine.observers.visibility.first_seen,
            objects,
            routes or {},
            timeline.log if timeline else [],
            end_t,
            engine.observers.visibility.live,
        )
        results["observer_disconnects"] = engine.observers.visibility.disconnects
        results["observed"] = observe  # false: convergence and propagation are unknown, not failed
        results.update(lag.summary())
        contributions = await read_contributions(engine)
        results["gini"] = contributions["gini"]
        results["powerlaw_alpha"] = contributions["powerlaw_alpha"]
        return Outcome(
            results, timeline.log if timeline else [], history, contributions, interrupted, history.t0, end_t
        )


class Interrupted(Exception):
    """should_stop() turned true before the workload started."""


async def _interruptible(work: Coroutine[Any, Any, None], should_stop: Callable[[], bool]) -> None:
    task = asyncio.ensure_future(work)
    while not task.done():
        if should_stop():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise Interrupted("interrupted during set-up")
        await asyncio.wait({task}, timeout=0.2)
    task.result()


def _all_visible(engine: Engine) -> bool:
    """Every acknowledged update seen on every replica that should hold it."""
    assert engine.observers is not None
    seen = engine.observers.visibility.first_seen
    for op in engine.history.ops:
        if op.type == "ok" and op.uid:
            for n in engine.nodes_of(op.object):
                if (op.uid, n) not in seen:
                    return False
    return True


async def _objects(engine: Engine) -> dict[str, set[str]]:
    """Each object that exists (as far as the workload knows) -> the nodes that should hold it,
    from its participant list as its creator's node has it at the end (the workload's own list
    if that node cannot answer)."""
    created = {op.object for op in engine.history.ops if op.kind == "create" and op.type in ("ok", "info")}
    oids = sorted({o.id for o in engine.plan.objects} | created)
    domain_to_node = {ep.domain: d for d, ep in engine.endpoints.items()}
    out: dict[str, set[str]] = {}
    for oid in oids:
        nodes = engine.nodes_of(oid)
        creator = engine.participants.get(oid, [None])[0]
        if creator is not None:
            home = engine.user_node(creator)
            try:
                view = await engine.request("GET", home, f"/api/objects/{oid}", engine.observer_tokens[home])
                nodes = {
                    domain_to_node[p.partition("@")[2]]
                    for p in view["participants"]
                    if p.partition("@")[2] in domain_to_node
                }
            except Exception:  # noqa: BLE001 - the workload's list stands in
                pass
        out[oid] = nodes
    return out
