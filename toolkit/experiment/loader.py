"""Turn an experiment YAML file into a validated `Experiment`, reporting every mistake at once
as file:line:col (InputError, exit 2): the schema, the topology it names (mistakes inside a
topology file are reported at their place in that file), timeline references and checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import InputError
from ..topology.loader import _Builder
from ..topology.model import Federation, Topology
from ..topology.names import did_you_mean
from ..yamlsource import Document, load_file
from .checks import parse_check
from .model import Check, Experiment, TimelineEvent
from .schema import ExperimentSpec, NetjsonTopology, PromqlCheck, TimelineEntry

_UNION_TAGS = {"cbpp", "constant", "PromqlCheck", "NetjsonTopology"}
PHASES = ("warmup", "workload")


class _Builder_(_Builder):
    """The topology loader's error reporting, minus pydantic's union tags in paths."""

    @staticmethod
    def _is_data_step(p: Any) -> bool:
        return _Builder._is_data_step(p) and p not in _UNION_TAGS


def load_experiment(path: str | Path) -> Experiment:
    doc = load_file(path)
    b = _Builder_(doc)
    if not isinstance(doc.data, dict):
        b.report((), "an experiment file is a mapping with name, topology, duration_s and workload")
        raise InputError(b.problems)
    spec, complete = _spec(b, doc.data)
    topology, ref = _topology(b, spec, Path(doc.file)) if "topology" in complete else (None, "")
    if topology is not None:
        topology = _federation_on(b, spec, topology)
        _platform_refusals(b, spec, topology)
    timeline = _timeline(b, spec, topology)
    checks = _checks(b, spec, timeline)
    if b.problems or topology is None:
        raise InputError(b.problems)
    return Experiment(
        name=spec.name,
        source=Path(doc.file),
        description=spec.description or "",
        topology=topology,
        topology_ref=ref,
        federation=spec.federation,
        seed=spec.seed,
        duration_s=spec.duration_s,
        warmup_s=spec.warmup_s,
        quiesce_s=spec.quiesce_s,
        workload=spec.workload,
        timeline=timeline,
        checks=checks,
        raw=doc.data,
    )


_SKELETON: dict[str, Any] = {
    "name": "unnamed",
    "topology": "",
    "duration_s": 1,
    "workload": {"model": "constant", "rate_per_s": 1},
}


def _spec(b: _Builder_, data: dict[str, Any]) -> tuple[ExperimentSpec, set[str]]:
    """Validate the top level, then each timeline entry and check on its own, keeping what is
    valid so that every mistake in the file is found in one pass. Returns the spec and the keys
    that were valid as written."""
    rest = {k: v for k, v in data.items() if k not in ("timeline", "checks")}
    spec = b.validate(ExperimentSpec, rest, ())
    complete = set(rest)
    if spec is None:
        valid = dict(_SKELETON)
        complete = set()
        for key, value in rest.items():
            try:
                ExperimentSpec.model_validate({**_SKELETON, key: value})
            except ValidationError:
                continue
            valid[key] = value
            complete.add(key)
        spec = ExperimentSpec.model_validate(valid)
    entries: list[TimelineEntry] = []
    raw_timeline = data.get("timeline") or []
    if not isinstance(raw_timeline, list):
        b.report(("timeline",), "timeline is a list of events")
        raw_timeline = []
    for i, raw in enumerate(raw_timeline):
        entry = b.validate(TimelineEntry, raw, ("timeline", i))
        entries.append(entry)
    checks: list[Any] = []
    raw_checks = data.get("checks") or []
    if not isinstance(raw_checks, list):
        b.report(("checks",), "checks is a list")
        raw_checks = []
    for i, raw in enumerate(raw_checks):
        if isinstance(raw, dict) and len(raw) == 1 and "promql" not in raw:
            # YAML reads `- converged_within_s(after: heal) < 10` as a one-key mapping: join it back
            ((key, value),) = raw.items()
            raw = f"{key}: {value}"
        if isinstance(raw, str):
            checks.append(raw)
        elif isinstance(raw, dict):
            checks.append(b.validate(PromqlCheck, raw, ("checks", i)))
        else:
            b.report(("checks", i), "a check is 'METRIC OP VALUE' or {promql, op, value}")
            checks.append(None)
    # invalid entries stay as None placeholders so indexes (and positions) keep matching the file
    return spec.model_copy(update={"timeline": entries, "checks": checks}), complete


def _sub_document(doc: Document, prefix: tuple[Any, ...]) -> Document:
    """The part of `doc` under `prefix`, positions kept (an inline topology reports in place)."""
    n = len(prefix)

    def cut(table: dict[tuple[Any, ...], tuple[int, int]]) -> dict[tuple[Any, ...], tuple[int, int]]:
        return {k[n:]: v for k, v in table.items() if k[:n] == prefix}

    data = doc.data
    for step in prefix:
        data = data[step]
    return Document(doc.file, data, cut(doc.value_pos), cut(doc.key_pos))


def _topology(b: _Builder_, spec: ExperimentSpec, source: Path) -> tuple[Topology | None, str]:
    from ..topology.loader import load_topology
    from ..topology.netjson import import_netjson

    base = source.parent
    raw = spec.topology
    try:
        if isinstance(raw, str):
            path = base / raw
            if not path.exists():
                b.report(("topology",), f"topology file {raw} not found (looked for {path})")
                return None, raw
            if path.suffix == ".json":
                return import_netjson(path), raw
            return load_topology(path), raw
        if "netjson" in raw:
            nj = b.validate(NetjsonTopology, raw, ("topology",))
            if nj is None:
                return None, "netjson"
            path = base / nj.netjson
            if not path.exists():
                b.report(("topology", "netjson"), f"NetJSON file {nj.netjson} not found (looked for {path})")
                return None, nj.netjson
            return import_netjson(
                path, link=nj.link, mac_attempts=nj.mac_attempts, profile=nj.profile, site=nj.site, name=nj.name
            ), nj.netjson
        return _Builder(_sub_document(b.doc, ("topology",))).build(), "inline"
    except InputError as exc:
        b.problems.extend(exc.problems)
        return None, str(raw if isinstance(raw, str) else "inline")


def _federation_on(b: _Builder_, spec: ExperimentSpec, topo: Topology) -> Topology:
    """The topology's federation block (every device if it has none), with the experiment's
    overrides: where nodes run (`on`) and the nodes' federation settings."""
    from dataclasses import replace

    fed = topo.federation or Federation("p2pvalue", tuple(topo.devices))
    on = spec.federation.on
    devices = fed.devices
    if on == "all":
        devices = tuple(topo.devices)
    elif on is not None:
        chosen: list[str] = []
        for i, name in enumerate(on):
            if name in topo.devices:
                chosen.append(name)
            elif name in topo.sites:
                chosen += topo.devices_in_site(name)
            else:
                b.report(
                    ("federation", "on", i),
                    f"'{name}' is neither a device nor a site of topology "
                    f"{topo.name}{did_you_mean(name, list(topo.devices) + list(topo.sites))}",
                )
        devices = tuple(dict.fromkeys(chosen))
    settings = dict(fed.settings)
    overrides = spec.federation.node_settings()
    if overrides:
        current = settings.get("federation")
        settings["federation"] = {**(current if isinstance(current, dict) else {}), **overrides}
    return replace(topo, federation=replace(fed, devices=devices, settings=settings))


def _platform_refusals(b: _Builder_, spec: ExperimentSpec, topo: Topology) -> None:
    """What the testbed the topology becomes (emulated or real devices) cannot do, each at its place."""
    from .platforms import platform_for

    try:
        platform = platform_for(topo)
    except InputError as exc:  # a topology mixing emulated and real devices
        for p in exc.problems:
            b.report(("topology",), p.message)
        return
    for path, message in platform.refusals(spec):
        b.report(path, message)


def _timeline(b: _Builder_, spec: ExperimentSpec, topo: Topology | None) -> tuple[TimelineEvent, ...]:
    events: list[TimelineEvent] = []
    times: dict[str, float] = {"warmup": 0.0, "workload": spec.duration_s}
    nodes = set(topo.federation.devices) if topo is not None and topo.federation else set()
    for i, entry in enumerate(spec.timeline):
        path = ("timeline", i)
        if entry is None:
            continue
        name = entry.name or f"{entry.kind}{sum(1 for e in events if e.kind == entry.kind) + 1}"
        if name in times:
            b.report(path + ("name",), f"event name '{name}' is used twice (or is a phase: {', '.join(PHASES)})")
        if entry.after is not None:
            if entry.after not in times:
                b.report(
                    path + ("after",),
                    f"'after: {entry.after}' names no earlier event or phase"
                    f"{did_you_mean(entry.after, times)}; known: {', '.join(times)}",
                )
                continue
            at_s = times[entry.after] + entry.delay_s
        else:
            at_s = float(entry.at_s or 0.0)
        if topo is not None:
            _check_refs(b, entry, path, topo, nodes)
        params = getattr(entry, entry.kind)
        params = {} if params is True else params.model_dump(exclude_none=True)
        times[name] = at_s
        line, col = b.doc.position(path)
        events.append(TimelineEvent(i, name, entry.kind, at_s, params, line, col))
    for e in events:
        if e.at_s > spec.duration_s + spec.quiesce_s:
            b.report(
                ("timeline", e.index),
                f"event '{e.name}' at {e.at_s:g} s is after the run ends "
                f"(duration_s {spec.duration_s:g} + quiesce_s {spec.quiesce_s:g})",
            )
    return tuple(sorted(events, key=lambda e: (e.at_s, e.index)))


def _check_refs(b: _Builder_, entry: TimelineEntry, path: tuple[Any, ...], topo: Topology, nodes: set[str]) -> None:
    def device(name: str, where: tuple[Any, ...], need_node: bool = False) -> None:
        if name not in topo.devices:
            b.report(where, f"unknown device '{name}'{did_you_mean(name, topo.devices)}")
        elif need_node and name not in nodes:
            b.report(where, f"device '{name}' runs no node (see federation.on)")

    if entry.partition is not None:
        for j, g in enumerate(entry.partition.groups):
            for k, item in enumerate([g] if isinstance(g, str) else g):
                where = path + ("partition", "groups", j) + (() if isinstance(g, str) else (k,))
                if item not in topo.devices and item not in topo.sites:
                    b.report(
                        where,
                        f"'{item}' is neither a site ({', '.join(topo.sites) or 'none'}) nor a device"
                        f"{did_you_mean(item, list(topo.devices) + list(topo.sites))}",
                    )
    if entry.link is not None:
        a, c = entry.link.between
        device(a, path + ("link", "between", 0))
        device(c, path + ("link", "between", 1))
        if a in topo.devices and c in topo.devices:
            try:
                topo.link_between(a, c)
            except KeyError:
                b.report(path + ("link", "between"), f"there is no link between {a} and {c}")
    if entry.node is not None:
        device(entry.node.device, path + ("node", "device"), need_node=True)
    if entry.device is not None:
        device(entry.device.device, path + ("device", "device"))


def _checks(b: _Builder_, spec: ExperimentSpec, timeline: tuple[TimelineEvent, ...]) -> tuple[Check, ...]:
    out: list[Check] = []
    names: set[str] = set()
    heals = {e.name for e in timeline if e.kind == "heal"} | (
        {"heal"} if any(e.kind == "heal" for e in timeline) else set()
    )
    for i, raw in enumerate(spec.checks):
        path = ("checks", i)
        if raw is None:
            continue
        if isinstance(raw, PromqlCheck):
            check = Check(
                name=raw.name or f"{raw.promql} {raw.op} {raw.value:g}", op=raw.op, value=raw.value, promql=raw.promql
            )
        else:
            try:
                check = parse_check(raw)
            except ValueError as exc:
                b.report(path, str(exc))
                continue
            after = check.args.get("after")
            if after is not None and after not in heals:
                b.report(
                    path,
                    f"converged_within_s(after: {after}): no heal event of that name in the timeline"
                    f"{'; heals: ' + ', '.join(sorted(heals)) if heals else ' (the timeline has no heal)'}",
                )
        if check.name in names:
            b.report(path, f"check '{check.name}' is listed twice")
        names.add(check.name)
        out.append(check)
    return tuple(out)
