"""The executor: applies a TestbedPlan and removes what it created. It makes no decisions.

Speed: every phase is a batch. Namespaces, the management network and the link veths are three
`ip -batch -` runs in the root namespace; addresses and routes are one `ip -n NS -batch -` per
namespace, 4 at a time; sysctls, offloads and link-up run in-process (`nsops`, setns per thread),
with no fork at all; the wire processes start all at once.
benchmarks/testbed_executor.py measured ~80 us per route batched, ~950 us with pyroute2 and
~5.6 ms with one forked `ip` per route. Before a phase runs, the resources it creates are appended to the journal and
fsync'ed, so `destroy()` can remove them after any crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from ..errors import RunError
from ..targets import LocalTarget, NetnsTarget, Target
from ..wire.launch import WireProcess
from . import claims, naming
from .plan import SERVICE_NET, RouteUpdate, TestbedPlan
from .state import TestbedState
from .steps import Phase, Step

Progress = Callable[[str, int, int], None]  # (phase title, phases done, phases total)
PROCESS_GRACE_S = 15.0  # a wire process closes ~200 packet sockets, ~15 ms each, on SIGTERM
STOP_FIRST_GRACE_S = 40.0  # a node launcher stops hundreds of nodes (10 s grace) and cleans their sockets


class DeviceTarget(Target, Protocol):
    """A target inside one device's namespace that also applies `nsops` lines (sysctl,
    offloads-off, up) without forking."""

    def ops(self, lines: list[str]) -> None: ...


def device_target(netns: str) -> DeviceTarget:
    """The target a step in namespace `netns` runs on: no cgroup (setup runs as root tooling;
    processes that must join the device's cgroups do so in their own script)."""
    return NetnsTarget(netns, netns)


HOST = LocalTarget("host")


def ip_batch(lines: list[str], netns: str | None = None, force: bool = False, host: Target = HOST) -> None:
    """One `ip [-n NS] -batch -` run on the host: thousands of lines cost one fork. `force` keeps
    going past failed lines and does not raise (for removal of what may be gone already)."""
    if not lines:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    host.run(argv, input="\n".join(lines) + "\n", timeout_s=120, check=not force)


ROUTE_WORKERS = 2  # namespaces whose routes change at once (the kernel does most of the work)


def apply_route_updates(updates: list[RouteUpdate], workers: int | None = None) -> int:
    """Each device's route changes, in its namespace, through rtnetlink from `workers` threads
    (default ROUTE_WORKERS; no process per device); returns the number of routes changed.
    RunError names the device."""
    from ..targets import nsops, rtnl

    def one(update: RouteUpdate) -> int:
        try:
            with nsops.netns(update.netns):
                return rtnl.change_routes(update.delete, update.replace)
        except (RunError, OSError) as e:
            raise RunError(f"changing the routes of device {update.device} ({update.netns}): {e}") from e

    with ThreadPoolExecutor(max(1, workers or ROUTE_WORKERS)) as pool:
        return sum(pool.map(one, updates))


def tc_batch(lines: list[str], netns: str, host: Target = HOST) -> None:
    if lines:
        host.run(["tc", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n", timeout_s=120)


# ---- processes ------------------------------------------------------------------------------------
def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_record(pid: int, role: str) -> dict[str, Any]:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmd = ""
    return {"kind": "process", "name": str(pid), "start": proc_start_time(pid), "cmd": cmd.strip(), "role": role}


def pids_in_namespaces(names: list[str]) -> list[int]:
    """Processes whose network namespace is one of ours (one scan of /proc)."""
    inodes = set()
    for n in names:
        try:
            inodes.add(os.stat(f"/run/netns/{n}").st_ino)
        except OSError:
            pass
    if not inodes:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino in inodes:
                found.append(int(entry.name))
        except OSError:
            continue
    return [p for p in found if p != os.getpid()]


def pids_in_cgroups(dirs: list[str]) -> list[int]:
    pids = []
    for d in dirs:
        for f in ("cgroup.procs", "tasks"):
            try:
                pids += [int(x) for x in Path(d, f).read_text().split()]
                break
            except (OSError, ValueError):
                continue
    return pids


def kill_all(pids: set[int], grace_s: float = 2.0) -> None:
    for pid in pids:
        with _quiet():
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with _quiet():
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30  # exiting can take a while (sockets to close)
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own children
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _quiet() -> contextlib.suppress:
    """Around signalling a process that may have exited meanwhile (nothing else is expected)."""
    return contextlib.suppress(ProcessLookupError)


# ---- apply -----------------------------------------------------------------------------------------
class Executor:
    """Runs every command through targets: `host` (ip/tc batches with `-n NS`, files, directories)
    and `device(netns)` (scripts and `nsops` inside a namespace). Tests pass recording fakes."""

    def __init__(
        self,
        plan: TestbedPlan,
        state: TestbedState,
        progress: Progress | None = None,
        host: Target = HOST,
        device: Callable[[str], DeviceTarget] = device_target,
    ):
        self.plan = plan
        self.state = state
        self.progress = progress or (lambda title, done, total: None)
        self.host = host
        self.device = device

    def preflight(self) -> None:
        """Refuse to start when a name this plan would create already exists (a stale testbed of
        the same id whose state was lost): `down` would otherwise remove something not ours."""
        existing = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        clash = sorted(existing & set(self.plan.namespaces()))
        root_ifs = set(os.listdir("/sys/class/net"))
        clash += sorted(root_ifs & ({self.plan.bridge} | {d.mgmt_peer for d in self.plan.devices.values()}))
        if clash:
            raise RunError(
                f"names of testbed {self.plan.id} already exist on this machine "
                f"({', '.join(clash[:5])}): remove them or choose another --id"
            )

    def apply(self) -> dict[str, float]:
        """Run every phase; returns seconds per phase."""
        phases = self.plan.phases()
        timings: dict[str, float] = {}
        for i, phase in enumerate(phases):
            self.progress(phase.title, i, len(phases))
            t0 = time.monotonic()
            self.run_phase(phase)
            timings[phase.title] = round(time.monotonic() - t0, 3)
        self.progress("done", len(phases), len(phases))
        return timings

    def run_phase(self, phase: Phase) -> None:
        self.state.record([r for s in phase.steps for r in s.resources])
        if len(phase.steps) == 1:
            self.run_step(phase.steps[0])
            return
        with ThreadPoolExecutor(phase.parallel) as pool:
            for fut in [pool.submit(self.run_step, s) for s in phase.steps]:
                fut.result()

    def run_step(self, step: Step) -> None:
        try:
            self._run_step(step)
        except OSError as e:
            raise RunError(f"{step.kind} step{' in ' + step.netns if step.netns else ''} failed: {e}") from e

    def _run_step(self, step: Step) -> None:
        # every step first creates its directories and writes its files (config, spec, settings)
        for r in step.resources:
            if r.kind in ("cgroup", "hostsdir"):
                self.host.make_dir(r.name)
        for path, content in step.files.items():
            self.host.put_file(path, content.encode())
        if step.kind == "ip":
            ip_batch(step.lines, step.netns, host=self.host)
        elif step.kind == "tc":
            assert step.netns
            tc_batch(step.lines, step.netns, host=self.host)
        elif step.kind == "sh":
            assert step.netns
            self.device(step.netns).run(["sh", "-ec", "\n".join(step.lines)])
        elif step.kind == "nsops":
            assert step.netns
            self.device(step.netns).ops(step.lines)
        elif step.kind == "wire":
            self.start_wire(int(step.lines[0]))
        elif step.kind == "converge":
            self.wait_converged()
        elif step.kind == "sshd":
            self.start_sshd(step)
        elif step.kind != "files":  # pragma: no cover - the planner makes only the kinds above
            raise RunError(f"unknown step kind {step.kind}")

    def start_wire(self, shard_index: int) -> None:
        shard = self.plan.wire_shards[shard_index]
        # The executor has set the wire-side ends up with offloads off (plan phase "link ends up").
        proc = WireProcess.start(
            self.device(shard.netns), shard.spec_path, shard.control_path, shard.log_path, extra_args=["--no-setup"]
        )
        self.state.record([process_record(proc.pid, f"wire-{shard_index}")])

    def start_sshd(self, step: Step) -> None:
        """sshd_config is written (files first, above); start sshd inside the namespace, journal its pid."""
        assert step.netns
        cp = self.device(step.netns).run(["sh", "-ec", "\n".join(step.lines)])
        pid = cp.stdout.strip().splitlines()[-1] if cp.stdout.strip() else ""
        if not pid.isdigit():
            raise RunError(f"sshd in {step.netns} wrote no pid file")
        self.state.record([process_record(int(pid), f"sshd-{step.netns}")])

    def wait_converged(self, timeout_s: float = 90) -> None:
        """babeld: wait until every device has a route to every other device it can reach."""
        expected = self.plan.expected_routes()
        t0 = time.monotonic()
        pending = dict(expected)
        while pending:
            for ns, want in list(pending.items()):
                cp = self.host.run(["ip", "-n", ns, "-4", "route", "show", "proto", "42", "root", str(SERVICE_NET)])
                if len(cp.stdout.strip().splitlines()) >= want:
                    del pending[ns]
            if not pending:
                break
            if time.monotonic() - t0 > timeout_s:
                raise RunError(
                    f"babeld routes did not converge within {timeout_s:.0f} s "
                    f"({len(pending)} devices still missing routes)"
                )
            time.sleep(0.2)
        self.state.update_meta(converged_s=round(time.monotonic() - t0, 2))


# ---- destroy ---------------------------------------------------------------------------------------
def destroy(state: TestbedState, log: Callable[[str], None] | None = None, host: Target = HOST) -> list[str]:
    """Remove exactly the resources in the testbed's journal; returns warnings. Idempotent, and
    never touches a resource whose name does not carry this testbed's id. Commands run on `host`;
    processes are signalled and /proc, /run/netns and cgroup directories are read directly."""
    tid = state.id
    warn: list[str] = []
    say = log or (lambda msg: None)
    rows = state.resources()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if not naming.owned_by(r["kind"], r["name"], tid):
            warn.append(f"skipped {r['kind']} {r['name']}: it does not carry testbed id {tid}")
            continue
        lst = by_kind.setdefault(r["kind"], [])
        if r not in lst:
            lst.append(r)
    namespaces = [r["name"] for r in by_kind.get("netns", [])]
    cgroups = list(dict.fromkeys(r["name"] for r in by_kind.get("cgroup", [])))

    # 0. faults on real devices (remote testbeds): undone over SSH first; if a device does not
    #    answer, the state stays so that `down` can be run again
    remote_rows = by_kind.get("remote-nft", []) + by_kind.get("remote-tc", [])
    if remote_rows:
        from .plan import plan_from_json
        from .remote import undo_faults

        say(f"removing faults from {len({r['name'].split('/')[0] for r in remote_rows})} real devices")
        undo_faults(state, remote_rows, plan_from_json((state.dir / "plan.json").read_text()))

    # 1. processes: recorded ones (only if still the same process), then anything left inside our
    #    namespaces or our cgroups. SIGTERM now; they exit while the namespaces go.
    # 0. processes journalled with stop_first (a node launcher) stop while the network still
    #    works: they end their own children cleanly, which then need no 15 s of grace below.
    first = {
        int(r["name"])
        for r in by_kind.get("process", [])
        if r.get("stop_first") and r.get("start") is not None and proc_start_time(int(r["name"])) == r["start"]
    }
    if first:
        say(f"stopping {len(first)} process(es) that stop first")
        kill_all(first, grace_s=STOP_FIRST_GRACE_S)

    victims: set[int] = set()
    for r in by_kind.get("process", []):
        pid = int(r["name"])
        if r.get("start") is not None and proc_start_time(pid) == r["start"]:
            victims.add(pid)
    victims |= set(pids_in_namespaces(namespaces))
    victims |= set(pids_in_cgroups(cgroups))
    victims.discard(os.getpid())
    if victims:
        say(f"stopping {len(victims)} processes")
        for pid in victims:
            with _quiet():
                os.kill(pid, signal.SIGTERM)

    # 2. namespaces first: the kernel tears down all their interfaces in one batch, including the
    #    root-side management veths (deleting 250 veths one by one costs ~5 s of RCU waits, their
    #    namespaces ~0.2 s).
    present = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    ns_gone = [n for n in namespaces if n in present]
    say(f"deleting {len(ns_gone)} namespaces")
    ip_batch([f"netns del {n}" for n in ns_gone], force=True, host=host)

    # 3. processes must be gone before the last namespaces (held by them) and cgroups can go.
    if victims:
        kill_all(victims, grace_s=PROCESS_GRACE_S)

    # 4. root-namespace interfaces: wait for the management veths to vanish with their
    #    namespaces, then delete what is left (the bridge) synchronously.
    rootifs = [r["name"] for r in by_kind.get("rootif", [])]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        existing = set(os.listdir("/sys/class/net"))
        if not [n for n in rootifs if n in existing and not n.endswith("br")]:
            break
        time.sleep(0.05)
    existing = set(os.listdir("/sys/class/net"))
    gone = [n for n in sorted(rootifs, key=lambda n: n.endswith("br")) if n in existing]
    say(f"deleting {len(gone)} interfaces")
    ip_batch([f"link del {n}" for n in gone], force=True, host=host)

    # 5. cgroups, children first (tasks may take a moment to leave)
    for d in sorted(cgroups, key=lambda p: p.count("/"), reverse=True):
        if not os.path.isdir(d):
            continue
        for _ in range(50):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                kill_all(set(pids_in_cgroups([d])), grace_s=0.2)
                time.sleep(0.05)
        else:
            warn.append(f"could not remove cgroup {d}")

    # 6. hosts files under /etc/netns, files
    for r in by_kind.get("hostsdir", []):
        d = Path(r["name"])
        if d.is_dir():
            for f in d.iterdir():
                f.unlink(missing_ok=True)
            d.rmdir()
    for r in by_kind.get("file", []):
        path = Path(r["name"])
        if claims.is_claim(path):
            kept = claims.release(path, state)
            if kept:
                warn.append(kept)
            continue
        path.unlink(missing_ok=True)

    # 7. host settings sized for this testbed (neighbour tables): back to what they were, unless
    #    another live testbed still needs them (its claim keeps them up)
    for r in by_kind.get("hostsysctl", []):
        from . import hostlimits

        try:
            hostlimits.release(r["name"])
        except OSError as e:
            warn.append(f"could not restore host settings ({r['name']}): {e}")

    # 8. verify
    existing = set(os.listdir("/sys/class/net"))
    left = [n for n in rootifs if n in existing]
    present = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    left += [n for n in namespaces if n in present]
    left += [c for c in cgroups if os.path.isdir(c)]
    if left:
        raise RunError(
            f"testbed {tid}: could not remove {', '.join(left[:5])}"
            f"{' ...' if len(left) > 5 else ''}; state kept in {state.dir}"
        )
    state.remove()
    return warn
