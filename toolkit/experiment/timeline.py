"""The fault timeline: each planned event (partition, heal, link, node, device, load) is applied
at its time and logged with its planned and achieved times (seconds since the workload start;
planned times in the experiment count from the end of the warm-up).

`Faults` is the small interface the timeline needs; `TestbedFaults` implements it with a live
Testbed and Deployment. Load changes are already in the workload plan (it is seeded and pure), so
here they are only logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from .model import TimelineEvent

Progress = Callable[[str, dict[str, Any]], None]


class Faults(Protocol):
    def partition(self, groups: list[Any]) -> list[list[str]]: ...
    def islands(self) -> list[list[str]]: ...
    def heal(self) -> None: ...
    def link(self, a: str, b: str, *, up: bool | None, settings: dict[str, float] | None, one_way: bool) -> None: ...
    def node(self, device: str, action: str) -> None: ...
    def device(self, device: str, action: str) -> None: ...


class TestbedFaults:
    """Faults on a live emulated testbed and the nodes deployed on it."""

    __test__ = False

    def __init__(self, testbed: Any, deployment: Any):
        self.testbed, self.deployment = testbed, deployment

    def partition(self, groups: list[Any]) -> list[list[str]]:
        resolved: list[list[str]] = self.testbed.resolve_groups(groups)
        self.testbed.partition(resolved)
        return resolved

    def islands(self) -> list[list[str]]:
        islands: list[list[str]] = self.testbed.islands()
        return islands

    def heal(self) -> None:
        self.testbed.heal()

    def link(self, a: str, b: str, *, up: bool | None, settings: dict[str, float] | None, one_way: bool) -> None:
        if up is not None:
            self.testbed.set_link_up(a, b, up)
        else:
            self.testbed.set_link(a, b, one_way=one_way, **(settings or {}))

    def node(self, device: str, action: str) -> None:
        getattr(self.deployment, action)(device)  # kill, restart, stop, start, pause, resume

    def device(self, device: str, action: str) -> None:
        if action == "reboot":
            self.deployment.reboot_device(device)

    def testbed_timings(self) -> dict[str, float]:
        """Where the last partition or heal spent its time (links, routes computed, routes
        applied, in seconds; route changes): `Testbed.last_timings`."""
        return {k: round(v, 3) for k, v in self.testbed.last_timings.items()}


def apply_event(faults: Faults, event: TimelineEvent) -> dict[str, Any]:
    """Apply one event; returns facts worth logging (the resolved partition groups and the islands
    they left; on a live testbed, where a partition or heal spent its time)."""
    p = event.params
    if event.kind in ("partition", "heal"):
        facts: dict[str, Any] = {}
        if event.kind == "partition":
            facts["groups"] = faults.partition(p["groups"])
            # who can still reach whom: more islands than groups when a cut splits a group apart
            facts["islands"] = faults.islands()
        else:
            faults.heal()
        if isinstance(faults, TestbedFaults):
            facts["testbed_s"] = faults.testbed_timings()
        return facts
    if event.kind == "link":
        a, b = p["between"]
        faults.link(a, b, up=p.get("up"), settings=p.get("set"), one_way=p.get("one_way", False))
    elif event.kind == "node":
        faults.node(p["device"], p["action"])
    elif event.kind == "device":
        faults.device(p["device"], p["action"])
    return {}


class TimelineRunner:
    """Runs the events at warmup_s + at_s after `t0` (wall clock), each in a worker thread (the
    testbed's calls are blocking), one after another in planned order."""

    def __init__(
        self,
        events: tuple[TimelineEvent, ...] | list[TimelineEvent],
        faults: Faults | None,
        warmup_s: float,
        clock: Callable[[], float],
        progress: Progress | None = None,
        log: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.events, self.faults, self.warmup_s, self.clock = list(events), faults, warmup_s, clock
        self.progress = progress or (lambda _e, _i: None)
        self.write = log or (lambda _r: None)
        self.log: list[dict[str, Any]] = []

    async def run(self) -> None:
        for event in self.events:
            planned = self.warmup_s + event.at_s
            delay = planned - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            record: dict[str, Any] = {
                "name": event.name,
                "kind": event.kind,
                "describe": event.describe(),
                "params": event.params,
                "planned_t": round(planned, 4),
                "started_t": round(self.clock(), 4),
            }
            self.progress("event", {"name": event.name, "describe": event.describe(), "planned_t": planned})
            start = time.monotonic()
            try:
                if event.kind != "load" and self.faults is not None:
                    record.update(await asyncio.to_thread(apply_event, self.faults, event))
                record["ok"] = True
            except Exception as exc:  # noqa: BLE001 - recorded in timeline.jsonl and shown in the report
                record["ok"], record["error"] = False, f"{type(exc).__name__}: {exc}"
            record["took_s"] = round(time.monotonic() - start, 4)
            record["achieved_t"] = round(self.clock(), 4)  # in effect from here on
            record["lateness_s"] = round(record["achieved_t"] - planned, 4)
            self.log.append(record)
            self.write(record)
            self.progress("event_done", record)
