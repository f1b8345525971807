"""The Python API of emulated testbeds, used by the CLI and the experiment runner.

    tb = Testbed.up(topology, testbed_id="tb1")      # or Testbed.open("tb1")
    tb.set_link("w1", "m1", delay_ms=50, loss_pct=5)
    tb.set_link_up("w1", "m1", False)
    tb.partition([["w1", "w2"], ["e1", "e2"]])       # or tb.partition(["west", "east"]) by site
    tb.heal()
    tb.exec("w1", ["ping", "-c1", "e1"])
    tb.link_stats()
    tb.down()

Partitions cut every link between two groups (link down, with either shaper) and, with static
routing, replace the routes of every device by shortest paths over the links that are left, so
traffic inside a group still flows even where its old path crossed the other group; traffic
between groups finds no route and fails at once ("Network is unreachable"). Devices in no group
form one more group. `heal()` brings those links back up and restores the original routes.
A plain `set_link_up(a, b, False)` does not reroute: static routes do not notice a dead link, just
as in a real network without a routing daemon (babeld reroutes by itself).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from .. import capabilities
from ..errors import InputError, RunError
from ..topology.direction import direction_from_dict
from ..topology.model import Direction, Topology
from . import claims, naming, remote
from .executor import Executor, Progress, apply_route_updates, destroy
from .plan import (
    DevicePlan,
    Routing,
    ShaperName,
    TestbedPlan,
    plan_from_json,
    plan_testbed,
    route_updates,
)
from .remote_faults import Capabilities, FaultState, RemoteCommand
from .shapers import shaper_for
from .state import TestbedState, live_ids, state_root


def choose_shaper(requested: str | None) -> ShaperName:
    """The shaper from `cnlab doctor`'s findings: netem where the kernel has it, else wire."""
    name = requested or ("netem" if capabilities.has_netem() else "wire")
    why_not = shaper_for(name).available()
    if why_not:
        raise RunError(f"--shaper {name}: {why_not}")
    return name  # type: ignore[return-value]


LINKS_PER_WIRE = 100


def default_wire_shards(n_links: int) -> int:
    """One wire process per ~100 links. Binding and closing an AF_PACKET socket each waits for
    an RCU grace period (~15 ms here), serially inside one process; processes started and stopped
    side by side share those waits, so more processes come up and go down faster."""
    return max(1, -(-n_links // LINKS_PER_WIRE))


def check_privileges() -> None:
    if capabilities.is_root():
        return
    if capabilities.user_namespaces_enabled():
        raise RunError(
            "emulated testbeds need root: run with sudo (user namespaces are enabled, "
            "but rootless testbeds are not supported yet)"
        )
    raise RunError(
        "emulated testbeds need root: run with sudo (not root, and user namespaces "
        "are off: sysctl user.max_user_namespaces is 0)"
    )


MACHINE_LOCK = "/run/cnlab/up.lock"
REMOTE_DEPLOYED = "ansible.json"  # the Ansible deployer's record (toolkit.deploy.ansible.STATE_FILE)


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """One lock per machine (whatever CNLAB_STATE_DIR says) around choosing names and subnets."""
    os.makedirs(os.path.dirname(MACHINE_LOCK), exist_ok=True)
    with open(MACHINE_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Testbed:
    """One live emulated testbed."""

    __test__ = False

    def __init__(self, state: TestbedState, plan: TestbedPlan):
        self.state = state
        self.plan = plan
        self.id = plan.id
        self.shaper = shaper_for(plan.shaper)
        # Seconds and counts of the last partition or heal: links_s (shaper), compute_s and
        # apply_s (routes), route_changes, devices_changed. Benchmarks and the runner's log read it.
        self.last_timings: dict[str, float] = {}

    # ---- bring up / open / down ----------------------------------------------------------------
    @classmethod
    def make_plan(
        cls,
        topology: Topology,
        testbed_id: str | None = None,
        *,
        shaper: str | None = None,
        routing: Routing = "static",
        ipv6: bool = True,
        wire_shards: int | None = None,
        probe: bool = True,
    ) -> TestbedPlan:
        tid = naming.check_id(testbed_id) if testbed_id else naming.random_id()
        if remote.is_remote(topology):  # every device real (kind: ssh); mixed kinds: InputError
            return remote.plan_remote_testbed(
                topology,
                tid,
                state_dir=str(state_root() / tid),
                known_hosts=remote.fleet_known_hosts(topology.name),
            )
        chosen = choose_shaper(shaper)
        return plan_testbed(
            topology,
            tid,
            shaper=chosen,
            routing=routing,
            ipv6=ipv6,
            state_dir=str(state_root() / tid),
            mgmt_taken=claims.subnets_in_use() if probe else [],
            cgroup_controllers=capabilities.cgroup_controllers() if probe else {},
            wire_shards=wire_shards or default_wire_shards(len(topology.links)),
        )

    @classmethod
    def up(
        cls,
        topology: Topology,
        testbed_id: str | None = None,
        *,
        shaper: str | None = None,
        routing: Routing = "static",
        ipv6: bool = True,
        wire_shards: int | None = None,
        progress: Progress | None = None,
    ) -> Testbed:
        """Bring a topology up; on any failure, remove what was created and re-raise. A topology of
        real devices (kind: ssh) becomes a remote testbed: state only, devices checked over SSH."""
        if remote.is_remote(topology):
            return cls._up_remote(cls.make_plan(topology, testbed_id), progress)
        check_privileges()
        if routing == "babeld" and not capabilities.which("babeld"):
            raise RunError("routing: babeld needs babeld: apt-get install babeld")
        t0 = time.monotonic()
        with machine_lock():  # two `up`s at once must not pick the same management subnet
            plan = cls.make_plan(
                topology, testbed_id, shaper=shaper, routing=routing, ipv6=ipv6, wire_shards=wire_shards
            )
            state = TestbedState(plan.id)
            state.create()
            state.update_meta(**plan.creating_meta(), mgmt_subnet=plan.mgmt_subnet)
            claims.claim(state, plan.mgmt_subnet)
        try:
            from . import hostlimits

            state.record([{"kind": "hostsysctl", "name": hostlimits.claim_path(str(state.dir))}])
            hostlimits.claim(str(state.dir), len(plan.devices))
            state.write_text("plan.json", plan.to_json(routes=False))
            state.write("links.json", initial_link_state(plan))
            ex = Executor(plan, state, progress)
            ex.preflight()
            timings = ex.apply()
            state.update_meta(phase="up", up_s=round(time.monotonic() - t0, 2), timings=timings)
        except BaseException as e:
            state.update_meta(phase="failed", error=str(e))
            try:
                destroy(state)
            except Exception as cleanup_error:  # keep the state for a later `down`
                raise RunError(f"{e}; and rolling back failed too: {cleanup_error}") from e
            raise
        return cls(state, plan)

    @classmethod
    def _up_remote(cls, plan: TestbedPlan, progress: Progress | None) -> Testbed:
        state = remote.bring_up(plan, progress)
        tb = cls(state, plan)
        try:
            state.write("links.json", initial_link_state(plan))
            for link in plan.links:  # links that start down (real devices: nft on both ends)
                if not link.up:
                    tb.shaper.set_up(tb, link, False)
        except BaseException as e:
            state.update_meta(phase="failed", error=str(e))
            destroy(state)
            raise
        return tb

    @classmethod
    def open(cls, testbed_id: str) -> Testbed:
        state = TestbedState(naming.check_id(testbed_id))
        try:
            text = (state.dir / "plan.json").read_text()
        except FileNotFoundError:
            raise InputError(f"no testbed {testbed_id!r} on this machine (see `cnlab status`)") from None
        return cls(state, plan_from_json(text))

    @staticmethod
    def down_id(testbed_id: str, log: Any = None) -> list[str]:
        """Remove a testbed by id, also one whose `up` crashed before writing its plan."""
        state = TestbedState(naming.check_id(testbed_id))
        if not state.exists:
            raise InputError(f"no testbed {testbed_id!r} on this machine (see `cnlab status`)")
        if state.meta.get("kind") == "remote" and (state.dir / REMOTE_DEPLOYED).exists():
            raise InputError(
                f"testbed {testbed_id} has nodes deployed on its real devices: `cnlab down {testbed_id}` "
                "removes them first (toolkit.deploy.ansible.cleanup_remote), then the testbed"
            )
        state.update_meta(phase="removing")
        return destroy(state, log)

    def down(self) -> list[str]:
        return self.down_id(self.id)

    @staticmethod
    def live() -> list[dict[str, Any]]:
        """Every testbed on this machine with its phase (a crashed `up` shows as broken)."""
        out = []
        for tid in live_ids():
            st = TestbedState(tid)
            meta = st.meta
            pid = meta.get("pid")
            phase = meta.get("phase", "unknown")
            if phase == "creating" and pid and not os.path.exists(f"/proc/{pid}"):
                phase = "broken (up died; run `cnlab down`)"
            out.append(
                {
                    "id": tid,
                    "kind": meta.get("kind", "emulated"),
                    "phase": phase,
                    "topology": meta.get("topology"),
                    "shaper": meta.get("shaper"),
                    "routing": meta.get("routing"),
                    "devices": meta.get("devices"),
                    "links": meta.get("links"),
                    "up_s": meta.get("up_s"),
                    "converged_s": meta.get("converged_s"),
                    "created": meta.get("created"),
                }
            )
        return out

    # ---- link state ----------------------------------------------------------------------------
    def _links(self) -> dict[str, Any]:
        stored = self.state.read("links.json")
        return stored if isinstance(stored, dict) else initial_link_state(self.plan)

    def set_link(self, a: str, b: str, *, one_way: bool = False, **changes: Any) -> dict[str, Any]:
        """Change a link while it runs: Direction fields (delay_ms, jitter_ms, loss_pct, loss_burst,
        rate_kbit, reorder) for both directions, or only a->b with one_way=True. rate_kbit=None
        makes the rate unlimited again."""
        if not self.shaper.can_shape:
            raise RunError(
                f"testbed {self.id} runs without a shaper (--shaper {self.plan.shaper}): "
                "links cannot be shaped; only up/down, partition and heal work"
            )
        link = self.plan.link(a, b)
        with self.state.lock():
            links = self._links()
            cur = links["links"][link.id]
            old = Direction(**cur["forward"]), Direction(**cur["reverse"])
            fwd, rev = old
            a_is_a = a == link.a.device
            try:
                if not one_way or a_is_a:
                    fwd = direction_from_dict(changes, fwd)
                if not one_way or not a_is_a:
                    rev = direction_from_dict(changes, rev)
            except ValueError as e:
                raise InputError(f"link {link.id}: {e}") from None
            self.shaper.set_directions(self, link, (fwd, rev), old)
            cur["forward"], cur["reverse"] = asdict(fwd), asdict(rev)
            self.state.write("links.json", links)
            return dict(cur)

    def ns_run(self, netns: str, argv: list[str], *, input: str | None = None) -> str:
        """Run argv inside namespace netns (the LinkRuntime of shapers); RunError on failure."""
        from ..targets.netns import NetnsTarget

        return NetnsTarget(netns, netns).run(argv, input=input, timeout_s=120).stdout

    # ---- real devices (remote testbeds): what the ssh shaper needs -------------------------------
    @property
    def is_remote(self) -> bool:
        return self.plan.kind == "remote"

    def remote_run(self, device: str, cmd: RemoteCommand) -> str:
        return remote.run_on(self.plan, device, cmd)

    def capabilities(self) -> dict[str, Capabilities]:
        return remote.capabilities(self.state)

    def fault_state(self) -> FaultState:
        return FaultState.from_dict(self.state.read(remote.FAULTS_FILE))

    def save_fault_state(self, faults: FaultState) -> None:
        self.state.write(remote.FAULTS_FILE, asdict(faults))

    def journal(self, kind: str, name: str) -> None:
        """Record a resource (once) before it is created."""
        row = {"kind": kind, "name": name}
        if row not in [{"kind": r.get("kind"), "name": r.get("name")} for r in self.state.resources()]:
            self.state.record([row])

    def set_link_up(self, a: str, b: str, up: bool) -> None:
        link = self.plan.link(a, b)
        with self.state.lock():
            links = self._links()
            cur = links["links"][link.id]
            cur["up"] = up
            self.shaper.set_up(self, link, up and link.id not in links["cut"])
            self.state.write("links.json", links)

    # ---- partition / heal ----------------------------------------------------------------------
    def resolve_groups(self, groups: list[str] | list[list[str]]) -> list[list[str]]:
        """Each group: a site name, a device name, or a list of device names (or 'a+b+c')."""
        sites = {d.site for d in self.plan.devices.values() if d.site}
        out: list[list[str]] = []
        for g in groups:
            items: list[str] = g.split("+") if isinstance(g, str) else list(g)
            members: list[str] = []
            for item in items:
                item = item.strip()
                if item in sites:
                    members += [d.name for d in self.plan.devices.values() if d.site == item]
                elif item in self.plan.devices:
                    members.append(item)
                else:
                    raise InputError(
                        f"partition group member {item!r} is neither a site "
                        f"({', '.join(sorted(sites)) or 'none'}) nor a device"
                    )
            out.append(members)
        seen: dict[str, int] = {}
        for i, members in enumerate(out):
            for m in members:
                if seen.setdefault(m, i) != i:
                    raise InputError(f"device {m!r} is in more than one partition group")
        rest = [d for d in self.plan.devices if d not in seen]
        if rest:
            out.append(rest)
        if len(out) < 2:
            raise InputError("a partition needs at least two groups")
        return out

    def partition(self, groups: list[str] | list[list[str]]) -> list[str]:
        """Cut every link between the groups; returns the ids of the links cut."""
        resolved = self.resolve_groups(groups)
        group_of = {m: i for i, g in enumerate(resolved) for m in g}
        with self.state.lock():
            links = self._links()
            old_cut = frozenset(links["cut"])
            cut = sorted(lk.id for lk in self.plan.links if group_of[lk.a.device] != group_of[lk.b.device])
            new_cut = old_cut | set(cut)
            t0 = time.perf_counter()
            for lid in sorted(new_cut - old_cut):
                self.shaper.set_up(self, self.plan.link_by_id(lid), False)
            self.last_timings = {"links_s": time.perf_counter() - t0}
            self._reroute(old_cut, frozenset(new_cut))
            links["cut"] = sorted(new_cut)
            links["groups"] = resolved
            self.state.write("links.json", links)
            return cut

    def islands(self) -> list[list[str]]:
        """The sets of devices that reach each other now (every device in one when nothing is cut)."""
        return self.plan.islands(frozenset(self._links()["cut"]))

    def heal(self) -> list[str]:
        """Undo every partition: links come back (unless set down by hand), routes are restored."""
        with self.state.lock():
            links = self._links()
            old_cut = frozenset(links["cut"])
            t0 = time.perf_counter()
            for lid in sorted(old_cut):
                if links["links"][lid]["up"]:
                    self.shaper.set_up(self, self.plan.link_by_id(lid), True)
            self.last_timings = {"links_s": time.perf_counter() - t0}
            self._reroute(old_cut, frozenset())
            links["cut"], links["groups"] = [], []
            self.state.write("links.json", links)
            return sorted(old_cut)

    def _reroute(self, old_cut: frozenset[str], new_cut: frozenset[str]) -> None:
        """Static routing: change only the routes whose link changes (toolkit/testbed/routing.py
        computes them; the tables of the cut sets seen in this process are memoised)."""
        if self.plan.routing != "static" or old_cut == new_cut:
            return
        t0 = time.perf_counter()
        updates = route_updates(self.plan.devices, self.plan.links, self.plan.ipv6, old_cut, new_cut)
        t1 = time.perf_counter()
        changed = apply_route_updates(updates)
        self.last_timings.update(
            compute_s=t1 - t0, apply_s=time.perf_counter() - t1, route_changes=changed, devices_changed=len(updates)
        )

    # ---- running things ------------------------------------------------------------------------
    def device(self, name: str) -> DevicePlan:
        try:
            return self.plan.devices[name]
        except KeyError:
            raise InputError(f"no device {name!r} in testbed {self.id}") from None

    def address(self, device: str) -> str:
        """The device's data-plane service address (reachable from every device)."""
        return self.device(device).service_v4.split("/")[0]

    def mgmt_address(self, device: str) -> str:
        """The device's management address (reachable from the root namespace, never shaped)."""
        return self.device(device).mgmt_addr.split("/")[0]

    def command(self, device: str, argv: list[str]) -> list[str]:
        """argv that runs `argv` inside the device: in its cgroup, then its namespace (hosts file
        included, through `ip netns exec`)."""
        from ..targets.netns import NetnsTarget

        if self.device(device).kind == "ssh":
            ssh = self.device(device).ssh or {}
            raise InputError(
                f"device {device} is a real device (kind: ssh): run commands on it over SSH "
                f"({ssh.get('user')}@{ssh.get('host')} port {ssh.get('port')})"
            )
        return NetnsTarget.for_device(self, device).wrap(argv)

    def exec(self, device: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(device, argv), check=False, **kwargs)

    def popen(self, device: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.command(device, argv), **kwargs)

    # ---- observing -----------------------------------------------------------------------------
    def link_stats(self) -> dict[str, Any]:
        """Per link: the shaper's counters (wire: per direction, with release lateness; netem and
        none: the kernel's interface counters of both ends), and the configured state."""
        links = self._links()
        out: dict[str, Any] = self.shaper.link_stats(self)
        for lid, cur in links["links"].items():
            out.setdefault(lid, {})["configured"] = {**cur, "cut": lid in links["cut"]}
        return out

    def status(self) -> dict[str, Any]:
        meta = self.state.meta
        links = self._links()
        return {
            "id": self.id,
            "kind": self.plan.kind,
            "phase": meta.get("phase"),
            "topology": self.plan.topology,
            "shaper": self.plan.shaper,
            "routing": self.plan.routing,
            "devices": len(self.plan.devices),
            "links": len(self.plan.links),
            "mgmt_subnet": self.plan.mgmt_subnet,
            "up_s": meta.get("up_s"),
            "converged_s": meta.get("converged_s"),
            "partition": links.get("groups") or None,
            "links_down": sorted(k for k, v in links["links"].items() if not v["up"]),
            "links_cut": links["cut"],
            "state_dir": str(self.state.dir),
            "monitor": meta.get("monitor_url"),
        }


def initial_link_state(plan: TestbedPlan) -> dict[str, Any]:
    return {
        "links": {
            lk.id: {"forward": asdict(lk.forward), "reverse": asdict(lk.reverse), "up": lk.up} for lk in plan.links
        },
        "cut": [],
        "groups": [],
    }
