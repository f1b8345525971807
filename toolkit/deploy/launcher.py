"""The node launcher: one process per testbed that imports the node stack once and forks the nodes.

    python -m toolkit.deploy.launcher STATE_DIR/launcher.json

Fork mode (default): after importing the image's modules and `gc.freeze()`, the launcher forks one
child per device. The child joins the device's cgroups (the profile's CPU and memory limits apply
to the node), enters the device's network namespace with setns(2) (ctypes: `os.setns` is 3.12+),
sends its output to the node's log and runs the image's `serve` hook. A forked child costs
~0.02-0.05 s of CPU against ~0.3 s for a fresh interpreter, and shares the imported code
copy-on-write.

Dense mode (`nodes_per_process`): one forked *host* per group of nodes runs them all in one asyncio
loop; for each node it makes the listening sockets inside the device's namespace (the calling
thread enters it for the `socket()` and `bind()` calls) and hands the image's `start` hook an
HTTP connector whose sockets are created inside that namespace too. No per-device cgroup, one crash
takes the group down, and one event loop adds tail latency (docs/deploy.md).

Control: a unix socket (STATE_DIR/launcher.sock, mode 0600), one JSON request per connection
(toolkit/deploy/protocol.py). Every child has PR_SET_PDEATHSIG=SIGKILL, so a launcher that dies
takes its nodes with it; the launcher journals itself and its children in the testbed's journal,
so `cnlab down` removes them even after a SIGKILL of `cnlab deploy` or of the launcher.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .protocol import LaunchNode, LaunchSpec, NodeProc, Reply, Request

PR_SET_PDEATHSIG = 1
EXIT_CONFIG = 78  # EX_CONFIG: the node refused its config (fail_deploy)
STOP_GRACE_S = 10.0
_libc = ctypes.CDLL(None, use_errno=True)


def _import(dotted: str) -> Any:
    import importlib

    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


PR_SET_NAME = 15


def _set_name(name: str) -> None:
    """The process's short name (`ps -o comm`, `top`; 15 bytes): which node a child runs."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _die_with_parent(parent: int) -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: nothing will kill us later
        os._exit(1)


def _enter_netns(name: str) -> None:
    from ..targets.nsops import _setns

    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def _redirect_output(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process (R, S, T, Z, ...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def quiet_sockets(namespaces: list[str]) -> None:
    """Before the nodes stop: connections they close from now on leave no TIME_WAIT socket, and
    unacknowledged FINs are given up after one retry (both per-namespace settings)."""
    from ..targets import nsops

    for ns in namespaces:
        try:
            nsops.run(ns, ["sysctl net.ipv4.tcp_max_tw_buckets 0", "sysctl net.ipv4.tcp_orphan_retries 1"])
        except Exception as e:  # a namespace already gone: nothing to quiet
            print(f"launcher: {ns}: {e}", flush=True)


def release_namespaces(namespaces: list[str], wait_s: float = 0.3) -> list[str]:
    """After the nodes stopped: wait (bounded) for their closing connections to finish, then
    destroy what is left (SOCK_DESTROY, as `ss -K` does). A socket in TIME_WAIT or with an
    unacknowledged FIN keeps its network namespace, and the device's management veth, alive after
    `cnlab down` deleted it (for up to a minute: `down` would wait 20 s per testbed). Sockets are
    listed and destroyed through sock_diag netlink (toolkit/targets/sockdiag.py): reading
    /proc/net/tcp costs ~50 ms per namespace here. Returns the namespaces where that failed."""
    from ..targets import nsops, sockdiag

    def left_in(ns: str) -> list[sockdiag.TcpSocket]:
        with nsops.netns(ns):
            return [s for s in sockdiag.tcp_sockets() if not s.listening]

    t0 = time.monotonic()
    deadline = t0 + wait_s
    pending, holding, failed = list(namespaces), [], []
    while pending:
        busy = []
        for ns in pending:
            try:
                socks = left_in(ns)
            except OSError as e:
                if os.path.exists(f"/run/netns/{ns}"):
                    failed.append(f"{ns}: {e}")
                continue  # gone already
            if any(not s.time_wait for s in socks):
                busy.append(ns)
            elif socks:
                holding.append(ns)  # TIME_WAIT does not end by itself for 60 s
        pending = busy
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    holding += pending
    t1 = time.monotonic()
    destroyed = 0
    for ns in holding:
        try:
            with nsops.netns(ns):
                destroyed += sockdiag.destroy([s for s in sockdiag.tcp_sockets() if not s.listening])
        except OSError as e:
            failed.append(f"{ns}: {e}")
    print(
        f"launcher: {len(namespaces)} namespaces scanned in {t1 - t0:.2f} s, {destroyed} sockets "
        f"destroyed in {len(holding)} in {time.monotonic() - t1:.2f} s",
        flush=True,
    )
    for f in failed:
        print(f"launcher: destroying sockets failed in {f}", flush=True)
    return failed


class Launcher:
    def __init__(self, spec: LaunchSpec, spec_path: str | None = None):
        self.spec = spec
        self.spec_path = spec_path
        self.nodes: dict[str, NodeProc] = {d: NodeProc("never") for d in spec.nodes}
        self.pid_devices: dict[int, list[str]] = {}  # child pid -> devices it hosts
        self.hosts: dict[int, tuple[int, socket.socket]] = {}  # dense: group -> (pid, control socket)
        self.server: socket.socket | None = None
        self.conn: socket.socket | None = None  # the request being served (children close it)
        self.me = os.getpid()
        self.stopping = False

    # ---- start-up -----------------------------------------------------------------------------
    def prepare(self) -> None:
        self._journal([os.getpid()], "launcher")
        _set_name(f"launcher:{self.spec.testbed_id}")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        for mod in self.spec.preload:
            __import__(mod)
        self.load_config = _import(self.spec.load_config)
        self.serve = _import(self.spec.serve)
        self.start_hook = _import(self.spec.start) if self.spec.start else None
        if self.spec.mode == "dense":
            import aiohttp  # noqa: F401 - the hosts use it; import before forking

            from ..targets import nsops  # noqa: F401
        gc.collect()
        gc.freeze()  # imported objects stay out of the children's collections: pages stay shared
        path = self.spec.socket_path
        Path(path).unlink(missing_ok=True)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            srv.bind(path)
        finally:
            os.umask(old)
        srv.listen(64)
        self.server = srv
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))

    def _journal(self, pids: list[int], role: str) -> None:
        from ..testbed.executor import process_record
        from ..testbed.state import TestbedState

        state = TestbedState(self.spec.testbed_id, root=Path(self.spec.state_dir).parent)
        first = {"stop_first": True} if role == "launcher" else {}
        state.record([{**process_record(p, role), **first} for p in pids])

    # ---- main loop ----------------------------------------------------------------------------
    def run(self) -> None:
        self.prepare()
        assert self.server is not None
        sel = selectors.DefaultSelector()
        sel.register(self.server, selectors.EVENT_READ)
        print(f"launcher {self.me} ready: {len(self.spec.nodes)} nodes, {self.spec.mode} mode", flush=True)
        while not self.stopping:
            for _key, _ in sel.select(timeout=0.1):
                try:
                    conn, _ = self.server.accept()
                except OSError:
                    continue
                with conn:
                    self.conn = conn
                    self._serve_one(conn)
                    self.conn = None
            self.reap()
        self.shutdown()

    def _serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buf = b""
        try:
            while not buf.endswith(b"\n"):
                chunk = conn.recv(1 << 16)
                if not chunk:
                    return
                buf += chunk
            req = Request.decode(buf)
            reply = self.handle(req)
        except Exception as e:  # a bad request or a failed op: answer it, keep serving
            reply = Reply(False, error=f"{type(e).__name__}: {e}")
            traceback.print_exc()
        try:
            conn.settimeout(60)
            conn.sendall(reply.encode())
        except OSError:
            pass

    def handle(self, req: Request) -> Reply:
        if req.op == "load":
            return Reply(True, {d: self.nodes[d] for d in self.load()})
        devices = req.devices or list(self.spec.nodes)
        unknown = [d for d in devices if d not in self.spec.nodes]
        if unknown:
            return Reply(False, error=f"no node on device(s) {', '.join(unknown)}")
        self.reap()
        if req.op == "status":
            self.refresh_hosts()
        elif req.op == "start":
            self.start(devices)
        elif req.op in ("stop", "kill"):
            self.stop(devices, kill=req.op == "kill")
        elif req.op in ("pause", "resume"):
            self.pause(devices, req.op == "pause")
        elif req.op == "shutdown":
            self.stopping = True
            self.stop(list(self.spec.nodes), kill=False)
        return Reply(True, {d: self.nodes[d] for d in devices})

    def load(self) -> list[str]:
        """Take in the nodes the spec file lists now (the deployer writes them after planning);
        nodes already known keep their state. Returns the new ones."""
        if self.spec_path is None:
            raise ValueError("the launcher was not started from a spec file: nothing to load")
        spec = LaunchSpec.from_json(Path(self.spec_path).read_text())
        if (spec.testbed_id, spec.mode, spec.socket_path) != (
            self.spec.testbed_id,
            self.spec.mode,
            self.spec.socket_path,
        ):
            raise ValueError(f"{self.spec_path} is for another testbed or mode than this launcher")
        new = [d for d in spec.nodes if d not in self.spec.nodes]
        for d in new:
            self.spec.nodes[d] = spec.nodes[d]
            self.nodes[d] = NodeProc("never")
        return new

    # ---- children -----------------------------------------------------------------------------
    def _set(self, device: str, state: str, **kw: Any) -> None:
        n = self.nodes[device]
        n.state = state  # type: ignore[assignment]
        n.since = time.time()
        for k, v in kw.items():
            setattr(n, k, v)

    def start(self, devices: list[str]) -> None:
        todo = [d for d in devices if self.nodes[d].state not in ("running", "paused")]
        if self.spec.mode == "fork":
            pids = []
            for d in todo:
                pid = self._fork_node(self.spec.nodes[d])
                self.pid_devices[pid] = [d]
                self._set(d, "running", pid=pid, exit_code=None, requested=False, error=None)
                pids.append(pid)
            if pids:
                self._journal(pids, "node")
            return
        by_group = self._by_group(todo)
        for group in by_group:
            if group not in self.hosts:
                self._fork_host(group)
        answers = self._host_calls({g: {"op": "start", "devices": m} for g, m in by_group.items()})
        for group, members in by_group.items():
            answer = answers[group]
            for d in members:
                got = answer.get(d, {})
                host_pid = self.hosts[group][0] if group in self.hosts else None
                if got.get("state") == "running":
                    self._set(d, "running", pid=host_pid, exit_code=None, requested=False, error=None)
                else:
                    self._set(
                        d,
                        "exited",
                        pid=host_pid,
                        exit_code=got.get("exit_code", 1),
                        requested=False,
                        error=got.get("error"),
                    )

    def _fork_node(self, node: LaunchNode) -> int:
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            self._child_setup(node.log_path)
            _set_name(f"node:{node.device}")
            for tasks in node.cgroup_tasks:
                with open(tasks, "w") as f:
                    f.write(str(os.getpid()))
            _enter_netns(node.netns)
            try:
                config = self.load_config(node.config_path)
            except Exception as e:
                print(f"cnlab launcher: {node.device}: the node refused its config: {e}", flush=True)
                code = EXIT_CONFIG
                raise
            import asyncio

            asyncio.run(self.serve(config))
            code = 0
        except BaseException:
            if code != EXIT_CONFIG:
                traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _child_setup(self, log_path: str) -> None:
        _die_with_parent(self.me)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for s in [self.server, self.conn, *(h for _pid, h in self.hosts.values())]:
            if s is not None:
                s.close()
        _redirect_output(log_path)
        gc.enable()

    def _fork_host(self, group: int) -> None:
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                ours.close()
                self._child_setup(f"{self.spec.state_dir}/host-{group}.log")
                _set_name(f"nodes:{group}")
                from .dense import Host

                Host(self.spec, group, theirs, self.load_config, self.start_hook).run()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        theirs.close()
        ours.settimeout(120)
        self.hosts[group] = (pid, ours)
        self.pid_devices[pid] = [d for d, n in self.spec.nodes.items() if n.group == group]
        self._journal([pid], f"dense-host-{group}")

    def _by_group(self, devices: list[str]) -> dict[int, list[str]]:
        """Dense mode: the given nodes by the host (group) that runs them."""
        by_group: dict[int, list[str]] = {}
        for d in devices:
            by_group.setdefault(self.spec.nodes[d].group, []).append(d)
        return by_group

    def _host_call(self, group: int, msg: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return self._host_calls({group: msg})[group]

    def _host_calls(self, msgs: dict[int, dict[str, Any]]) -> dict[int, dict[str, dict[str, Any]]]:
        """Send every host its request first, then read the answers: the hosts work side by side."""
        sent: dict[int, OSError | None] = {}
        for group, msg in msgs.items():
            try:
                self.hosts[group][1].sendall((json.dumps(msg) + "\n").encode())
                sent[group] = None
            except OSError as e:
                sent[group] = e
        return {group: self._host_answer(group, msgs[group], sent[group]) for group in msgs}

    def _host_answer(self, group: int, msg: dict[str, Any], error: OSError | None) -> dict[str, dict[str, Any]]:
        pid, s = self.hosts[group]
        try:
            if error is not None:
                raise error
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise OSError("the host process closed its control channel")
                buf += chunk
        except OSError as e:
            return {
                d: {"state": "exited", "error": f"dense host {pid} of group {group}: {e}"}
                for d in msg.get("devices", [])
            }
        return json.loads(buf)["nodes"]  # type: ignore[no-any-return]

    def refresh_hosts(self) -> None:
        """Dense mode: a node that failed inside a live host shows up here."""
        for group in list(self.hosts):
            members = [d for d, n in self.spec.nodes.items() if n.group == group and self.nodes[d].state == "running"]
            if not members:
                continue
            for d, got in self._host_call(group, {"op": "status", "devices": members}).items():
                if got.get("state") != "running":
                    self._set(d, "exited", exit_code=got.get("exit_code", 1), error=got.get("error"))

    def stop(self, devices: list[str], *, kill: bool) -> None:
        live = [d for d in devices if self.nodes[d].state in ("running", "paused")]
        if self.spec.mode == "dense":
            by_group = self._by_group(live)
            self._host_calls({g: {"op": "kill" if kill else "stop", "devices": m} for g, m in by_group.items()})
            for _group, members in by_group.items():
                for d in members:
                    self._set(d, "exited" if kill else "stopped", exit_code=-9 if kill else 0, requested=True)
            if self.stopping:
                self._end_hosts()
            return
        pids = {self.nodes[d].pid: d for d in live if self.nodes[d].pid}
        for pid in pids:
            try:
                if kill:
                    os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
                else:
                    os.kill(pid, signal.SIGCONT)  # type: ignore[arg-type]  # a paused node must see SIGTERM
                    os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
            except ProcessLookupError:
                pass
        for d in pids.values():
            self.nodes[d].requested = True
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(self.nodes[d].state in ("running", "paused") for d in pids.values()):
            self.reap()
            time.sleep(0.02)
        for pid, d in pids.items():
            if self.nodes[d].state in ("running", "paused"):
                os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
        while any(self.nodes[d].state in ("running", "paused") for d in pids.values()):
            self.reap()
            time.sleep(0.02)
        for d in pids.values():
            if not kill:  # a killed node stays `exited` (-9): a crash, as the status shows it
                self.nodes[d].state = "stopped"

    def _end_hosts(self) -> None:
        for _group, (pid, s) in list(self.hosts.items()):
            s.close()
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE_S
        while self.hosts and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.02)
        for pid, _s in list(self.hosts.values()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def pause(self, devices: list[str], pause: bool) -> None:
        """SIGSTOP/SIGCONT for a forked node; in dense mode its host freezes (thaws) it inside the
        shared loop (toolkit/deploy/suspend.py). Returns once the change took effect."""
        targets = [d for d in devices if self.nodes[d].state in ("running", "paused")]
        not_running = [d for d in devices if d not in targets]
        if not_running:
            raise ValueError(f"not running: {', '.join(not_running)}")
        suspend = self._suspend_in_hosts if self.spec.mode == "dense" else self._signal_nodes
        suspend(targets, pause)
        for d in targets:
            self._set(d, "paused" if pause else "running")

    def _signal_nodes(self, devices: list[str], pause: bool) -> None:
        sig = signal.SIGSTOP if pause else signal.SIGCONT
        for d in devices:
            os.kill(self.nodes[d].pid, sig)  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        for d in devices:
            pid = self.nodes[d].pid
            assert pid is not None
            while (proc_state(pid) in ("T", "t")) != pause:
                if time.monotonic() > deadline:
                    raise ValueError(f"{d}: process {pid} did not {'stop' if pause else 'continue'}")
                time.sleep(0.005)

    def _suspend_in_hosts(self, devices: list[str], pause: bool) -> None:
        by_group = self._by_group(devices)
        want = "paused" if pause else "running"
        answers = self._host_calls(
            {g: {"op": "pause" if pause else "resume", "devices": m} for g, m in by_group.items()}
        )
        wrong = [
            f"{d}: {got.get('error') or got.get('state')}"
            for a in answers.values()
            for d, got in a.items()
            if got.get("state") != want
        ]
        if wrong:
            raise ValueError(f"the dense host did not {'pause' if pause else 'resume'} {'; '.join(wrong)}")

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            for d in self.pid_devices.pop(pid, []):
                n = self.nodes[d]
                if n.pid == pid and n.state in ("running", "paused"):
                    self._set(d, "exited", exit_code=code)
            for group, (hpid, s) in list(self.hosts.items()):
                if hpid == pid:
                    s.close()
                    del self.hosts[group]

    def shutdown(self) -> None:
        self.stopping = True
        t0 = time.monotonic()
        namespaces = sorted({n.netns for n in self.spec.nodes.values()})
        quiet_sockets(namespaces)
        t1 = time.monotonic()
        self.stop(list(self.spec.nodes), kill=False)
        if self.spec.mode == "dense":
            self._end_hosts()
        t2 = time.monotonic()
        failed = release_namespaces(namespaces)
        print(
            f"launcher: shut down in {time.monotonic() - t0:.2f} s (quiet sockets {t1 - t0:.2f} s, nodes "
            f"stopped {t2 - t1:.2f} s, namespaces released {time.monotonic() - t2:.2f} s"
            f"{', failed in ' + str(len(failed)) if failed else ''})",
            flush=True,
        )
        if self.server is not None:
            self.server.close()
            Path(self.spec.socket_path).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m toolkit.deploy.launcher STATE_DIR/launcher.json", file=sys.stderr)
        return 2
    spec = LaunchSpec.from_json(Path(args[0]).read_text())
    Launcher(spec, args[0]).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
