"""Turn a topology YAML file into a validated `Topology`, reporting every mistake at once.

Each device and link is validated on its own, so one bad entry does not hide the others; the
problems are collected with their file positions and raised together as one InputError.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import networkx as nx
from pydantic import BaseModel, ValidationError

from ..errors import InputError, Problem
from ..yamlsource import Document, load_file
from .model import Device, Direction, Federation, Link, Profile, SshTarget, Topology
from .names import NAME_RULE, did_you_mean, is_valid_name, sanitize
from .presets import DEFAULT_LINK, DEFAULT_PROFILE, LINK_PRESETS, PROFILES
from .schema import DeviceSpec, LinkSpec, TopologySpec

_USERNAME_RE = re.compile(r"^[a-z0-9._-]{1,64}$")
_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def load_topology(path: str | Path) -> Topology:
    """Load and validate a topology file; raises InputError listing every problem found."""
    return _Builder(load_file(path)).build()


def load_any(path: str | Path) -> Topology:
    """A topology YAML file, or a NetJSON NetworkGraph (`.json`, `.netjson`) imported."""
    p = Path(path)
    if p.suffix == ".json" or p.name.endswith(".netjson"):
        from .netjson import import_netjson

        return import_netjson(p)
    return load_topology(p)


def _flatten(ann: Any) -> list[Any]:
    """The alternatives of an annotation: Optional[X] | Y -> [X, Y, NoneType]."""
    if get_origin(ann) in (Union, UnionType, Annotated):
        args = get_args(ann)[:1] if get_origin(ann) is Annotated else get_args(ann)
        return [x for a in args for x in _flatten(a)]
    return [ann]


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if isinstance(p, (str, int)) and not str(p).startswith(("function-", "literal["))]
    return ".".join(parts) or "value"


class _Builder:
    def __init__(self, doc: Document):
        self.doc = doc
        self.problems: list[Problem] = list(doc.problems)

    def report(self, path: tuple[Any, ...], message: str, *, at_key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, at_key=at_key))

    # -- schema validation, one piece at a time ------------------------------------------------
    def validate(self, model: type[BaseModel], data: Any, path: tuple[Any, ...]) -> Any:
        """Validate data against a model; report each error at its position; None if invalid."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(p for p in err["loc"] if self._is_data_step(p))
                where = path + loc
                if err["type"] == "extra_forbidden":
                    allowed = self._allowed_keys(model, loc[:-1])
                    self.report(
                        where,
                        f"unknown key '{loc[-1]}'{did_you_mean(str(loc[-1]), allowed)}; "
                        f"allowed here: {', '.join(sorted(allowed))}",
                        at_key=True,
                    )
                elif err["type"] == "missing" and isinstance(loc[-1], int):
                    self.report(where[:-1], f"{_field_name(loc[:-1])}: too few items (item {loc[-1] + 1} is missing)")
                elif err["type"] == "missing":
                    self.report(where[:-1], f"missing required key '{loc[-1]}'")
                else:
                    got = err.get("input")
                    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
                    message = err["msg"].removeprefix("Value error, ")
                    self.report(where, f"{_field_name(loc)}: {message}{shown}" if loc else message)
            return None

    @staticmethod
    def _is_data_step(p: Any) -> bool:
        return isinstance(p, int) or (
            isinstance(p, str)
            and not any(c in p for c in "[(")
            and p not in ("str", "int", "float", "bool", "list", "dict", "literal", "none")
        )

    @staticmethod
    def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
        """The keys allowed in the mapping at `loc` inside `model` (for 'unknown key' messages)."""
        current, steps = model, list(loc)
        while steps:
            field = current.model_fields.get(steps.pop(0)) if isinstance(steps[0], str) else None
            if field is None:
                break
            ann: Any = field.annotation
            while True:
                options = _flatten(ann)
                models = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
                containers = [a for a in options if get_origin(a) in (dict, list, tuple)]
                if models:
                    current = models[0]
                    break
                if not containers or not steps:
                    return [f.alias or n for n, f in current.model_fields.items()]
                ann = get_args(containers[0])[-1]
                steps.pop(0)  # the dict key or list index
        return [f.alias or n for n, f in current.model_fields.items()]

    # -- the whole file ------------------------------------------------------------------------
    def build(self) -> Topology:
        data = self.doc.data
        if not isinstance(data, dict):
            self.report((), "a topology file is a mapping with at least 'name' and 'devices'")
            raise InputError(self.problems)
        spec = self._top_level(data)
        profiles = self._profiles(spec)
        presets = self._presets(spec)
        sites = self._sites(spec)
        devices: dict[str, Device] = {}
        links: dict[frozenset[str], Link] = {}
        provenance: dict[str, Any] = dict(spec.provenance or {})
        if spec.import_ is not None:
            from .netjson import import_into  # a cycle otherwise: netjson builds on this module

            imported = import_into(self, spec.import_, profiles, presets)
            if imported is not None:
                devices.update(imported.devices)
                links.update({link.key: link for link in imported.links})
                provenance.update(imported.provenance)
                sites = sites + tuple(s for s in imported.sites if s not in sites)
        known = set(devices) | {n for n in spec.devices if isinstance(n, str)}
        devices.update(self._devices(spec, profiles, sites, devices))
        links.update(self._links(spec, presets, known))
        federation = self._federation(spec, known, sites, devices)
        if not self.problems:
            self._check_connected(spec, devices, links.values())
        if self.problems:
            raise InputError(self.problems)
        return Topology(
            name=spec.name,
            devices=devices,
            links=tuple(links.values()),
            sites=sites,
            federation=federation,
            allow_partitioned=spec.allow_partitioned,
            routing=spec.routing,
            description=spec.description or "",
            source=Path(self.doc.file),
            provenance=provenance,
        )

    def _top_level(self, data: dict[str, Any]) -> TopologySpec:
        spec = self.validate(TopologySpec, data, ())
        if isinstance(spec, TopologySpec):
            return spec
        # Keep going with what is valid, so mistakes further down are found too.
        valid = {k: v for k, v in data.items() if k in TopologySpec.model_fields or k == "import"}
        for key in list(valid):
            try:
                TopologySpec.model_validate({"name": "x", key: valid[key]})
            except ValidationError:
                valid.pop(key)
        valid.setdefault("name", "unnamed")
        return TopologySpec.model_validate(valid)

    def _profiles(self, spec: TopologySpec) -> dict[str, Profile]:
        profiles = dict(PROFILES)
        for name, p in spec.profiles.items():
            profiles[name] = Profile(name, p.cpus, p.memory_mb, p.source or "defined in the topology file")
        return profiles

    def _presets(self, spec: TopologySpec) -> dict[str, Direction]:
        presets = dict(LINK_PRESETS)
        for name, p in spec.link_presets.items():
            presets[name] = Direction(**p.given())
        return presets

    def _sites(self, spec: TopologySpec) -> tuple[str, ...]:
        for name in spec.sites or {}:
            if not is_valid_name(name):
                self.report(("sites", name), f"site name '{name}' is not allowed: {NAME_RULE}", at_key=True)
        return tuple(spec.sites or ())

    def _pick(self, kind: str, name: str | None, table: dict[str, Any], path: tuple[Any, ...]) -> str | None:
        if name is not None and name not in table:
            self.report(path, f"unknown {kind} '{name}'{did_you_mean(name, table)}; known: {', '.join(sorted(table))}")
            return None
        return name

    def _devices(
        self, spec: TopologySpec, profiles: dict[str, Profile], sites: tuple[str, ...], imported: dict[str, Device]
    ) -> dict[str, Device]:
        default_profile = self._pick("profile", spec.defaults.profile, profiles, ("defaults", "profile"))
        out: dict[str, Device] = {}
        lowered: dict[str, str] = {name.lower(): name for name in imported}
        for name, raw in spec.devices.items():
            path = ("devices", name)
            if not is_valid_name(name):
                self.report(path, f"device name '{name}' is not allowed: {NAME_RULE}", at_key=True)
            elif name.lower() in lowered and lowered[name.lower()] != name:
                self.report(path, f"device '{name}' differs from '{lowered[name.lower()]}' only by case", at_key=True)
            lowered.setdefault(str(name).lower(), str(name))
            d = self.validate(DeviceSpec, raw if raw is not None else {}, path)
            if d is None:
                continue
            base = imported.get(name)
            profile_name = self._pick("profile", d.profile, profiles, path + ("profile",))
            profile = profiles[profile_name or default_profile or DEFAULT_PROFILE]
            if d.profile is None and base is not None:
                profile = base.profile
            site = d.site if d.site is not None else (base.site if base else None)
            if site is not None and spec.sites is not None and site not in sites:
                self.report(
                    path + ("site",),
                    f"unknown site '{site}'{did_you_mean(site, sites)}; declared sites: {', '.join(sites) or 'none'}",
                )
            ssh = None
            if d.kind == "ssh":
                ssh = SshTarget(
                    host=d.host or "",
                    user=d.user or "root",
                    port=d.port or 22,
                    key=self._key_path(d.key),
                    host_key=d.host_key,
                    become=bool(d.become),
                    root=d.root or "",
                )
            meta = dict(base.meta) if base else {}
            meta.update(d.meta or {})
            deploy = "ansible" if d.kind == "ssh" else (d.deploy or (base.deploy if base else "direct"))
            out[name] = Device(name=name, profile=profile, kind=d.kind, site=site, ssh=ssh, deploy=deploy, meta=meta)
        return out

    def _key_path(self, key: str | None) -> str | None:
        """A private key file, relative to the topology file's directory (`~` expanded)."""
        if key is None:
            return None
        p = Path(key).expanduser()
        return str(p if p.is_absolute() else Path(self.doc.file).parent / p)

    def _links(self, spec: TopologySpec, presets: dict[str, Direction], known: set[str]) -> dict[frozenset[str], Link]:
        default_preset = self._pick("link preset", spec.defaults.link, presets, ("defaults", "link"))
        out: dict[frozenset[str], Link] = {}
        first_at: dict[frozenset[str], int] = {}
        for i, raw in enumerate(spec.links):
            path = ("links", i)
            spec_link = self.validate(LinkSpec, raw, path)
            if spec_link is None:
                continue
            a, b = spec_link.between
            ok = True
            for j, end in enumerate((a, b)):
                if end not in known:
                    self.report(path + ("between", j), f"link to unknown device '{end}'{did_you_mean(end, known)}")
                    ok = False
            if a == b:
                self.report(path + ("between",), f"a link joins two different devices, not '{a}' to itself")
                ok = False
            key = frozenset((a, b))
            if ok and key in first_at:
                self.report(
                    path + ("between",),
                    f"duplicate link between '{a}' and '{b}' "
                    f"(first at line {first_at[key]}); use forward/reverse for asymmetric links",
                )
                ok = False
            preset_name = self._pick("link preset", spec_link.link, presets, path + ("link",))
            if not ok or (spec_link.link is not None and preset_name is None):
                continue
            first_at[key] = self.doc.position(path)[0]
            preset_name = preset_name or default_preset or DEFAULT_LINK
            both = presets[preset_name].with_changes(**spec_link.given())
            fwd = both.with_changes(**(spec_link.forward.given() if spec_link.forward else {}))
            rev = both.with_changes(**(spec_link.reverse.given() if spec_link.reverse else {}))
            out[key] = Link(a=a, b=b, forward=fwd, reverse=rev, preset=preset_name, up=spec_link.up)
        return out

    def _federation(
        self, spec: TopologySpec, known: set[str], sites: tuple[str, ...], devices: dict[str, Device]
    ) -> Federation | None:
        fed = spec.federation
        if fed is None:
            return None
        if not is_valid_name(fed.image):
            self.report(("federation", "image"), f"image name '{fed.image}' is not allowed: {NAME_RULE}")
        if fed.on == "all":
            chosen = list(devices)
        else:
            chosen = []
            for i, name in enumerate(fed.on):
                if name in known:
                    chosen.append(name)
                elif name in sites:
                    chosen.extend(d.name for d in devices.values() if d.site == name)
                else:
                    self.report(
                        ("federation", "on", i),
                        f"'{name}' is neither a device nor a site{did_you_mean(name, list(known) + list(sites))}",
                    )
        chosen = list(dict.fromkeys(chosen))
        pairs: list[tuple[str, str]] = []
        for i, (a, b) in enumerate(fed.trust_pairs):
            for j, end in enumerate((a, b)):
                if end not in chosen:
                    self.report(
                        ("federation", "trust_pairs", i, j),
                        f"'{end}' runs no node of this federation{did_you_mean(end, chosen)}",
                    )
            if a == b:
                self.report(("federation", "trust_pairs", i), f"a node trusts itself already ('{a}')")
            pairs.append((a, b))
        if isinstance(fed.accounts, int):
            accounts = tuple(f"user{i}" for i in range(1, fed.accounts + 1))
        else:
            accounts = tuple(fed.accounts)
            for i, user in enumerate(accounts):
                if not _USERNAME_RE.match(user):
                    self.report(
                        ("federation", "accounts", i),
                        f"username '{user}' is not allowed: 1-64 of a-z, 0-9, '.', '_', '-'",
                    )
            if len(set(accounts)) != len(accounts):
                self.report(("federation", "accounts"), "a username is listed twice")
        suffix = fed.domain_suffix
        if suffix is not None and not _DOMAIN_RE.match(suffix):
            self.report(
                ("federation", "domain_suffix"),
                f"domain suffix '{suffix}' is not allowed: "
                "lowercase DNS labels joined by '.', e.g. ffwien or lab.example",
            )
        elif suffix is None and not _DOMAIN_RE.match(spec.name):
            suffix = sanitize(spec.name)
        return Federation(
            fed.image,
            tuple(chosen),
            trust=fed.trust,
            trust_pairs=tuple(pairs),
            accounts=accounts,
            limits=dict(fed.limits),
            settings=dict(fed.settings),
            domain_suffix=suffix,
        )

    def _check_connected(self, spec: TopologySpec, devices: dict[str, Device], links: Any) -> None:
        if spec.allow_partitioned:
            return
        g: nx.Graph[str] = nx.Graph()
        g.add_nodes_from(n for n, d in devices.items() if d.kind == "emulated")
        g.add_edges_from((link.a, link.b) for link in links if link.a in g and link.b in g)
        if g.number_of_nodes() > 1 and not nx.is_connected(g):
            parts = sorted((sorted(c) for c in nx.connected_components(g)), key=len, reverse=True)
            shown = "; ".join("{" + ", ".join(p[:4]) + (", ..." if len(p) > 4 else "") + "}" for p in parts[:4])
            self.report(
                ("links",),
                f"the data plane falls apart into {len(parts)} parts: {shown}; "
                "add links or set allow_partitioned: true",
                at_key=True,
            )
