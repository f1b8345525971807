"""The typed contract between the deployer and its launcher process: the spec the launcher reads at
start, and the JSON messages on its control socket (one request line, one reply line).

    request:  {"op": "load"|"start"|"stop"|"kill"|"pause"|"resume"|"status"|"shutdown", "devices": [...]}
    reply:    {"ok": true, "nodes": {device: NodeProc}}  or  {"ok": false, "error": "..."}

`devices` empty means every node. `load` re-reads the nodes from the spec file: the deployer starts
the launcher (its imports take ~0.5 s) while it plans, and writes the nodes once they are planned.
Every op returns once the change took effect: `stop` after the
node exited, `start` after the process is running (not yet healthy: the deployer checks health
over the management network), `pause`/`resume` after the kernel reports the process stopped or
running again (dense mode: after the host froze or thawed the node, toolkit/deploy/suspend.py).
"""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import RunError

Op = Literal["load", "start", "stop", "kill", "pause", "resume", "status", "shutdown"]
OPS = ("load", "start", "stop", "kill", "pause", "resume", "status", "shutdown")
ProcState = Literal["never", "running", "paused", "stopped", "exited"]


@dataclass
class LaunchNode:
    device: str
    netns: str
    cgroup_tasks: list[str]
    config_path: str
    log_path: str
    group: int
    listen: dict[str, dict[str, Any]]  # port name -> {host, port}: the sockets dense mode makes


@dataclass
class LaunchSpec:
    testbed_id: str
    state_dir: str
    mode: Literal["fork", "dense"]
    socket_path: str
    preload: list[str]
    load_config: str  # dotted hook names from the image manifest
    serve: str
    start: str | None
    nodes: dict[str, LaunchNode] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> LaunchSpec:
        raw = json.loads(text)
        nodes = {k: LaunchNode(**v) for k, v in raw.pop("nodes").items()}
        return cls(**raw, nodes=nodes)


@dataclass
class NodeProc:
    """What the launcher knows of one node's process."""

    state: ProcState
    pid: int | None = None  # the node's process (fork) or its host process (dense)
    exit_code: int | None = None  # of the last run; negative: killed by that signal
    requested: bool = False  # the last exit was asked for (stop; kill too, though it shows as a crash)
    since: float = 0.0  # time.time() of the last change
    error: str | None = None


@dataclass
class Request:
    op: Op
    devices: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()

    @classmethod
    def decode(cls, line: bytes) -> Request:
        raw = json.loads(line)
        if not isinstance(raw, dict) or raw.get("op") not in OPS:
            raise ValueError(f"unknown request {line[:200]!r}")
        devices = raw.get("devices") or []
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise ValueError("devices must be a list of names")
        return cls(raw["op"], devices)


@dataclass
class Reply:
    ok: bool
    nodes: dict[str, NodeProc] = field(default_factory=dict)
    error: str | None = None

    def encode(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()

    @classmethod
    def decode(cls, line: bytes) -> Reply:
        raw = json.loads(line)
        return cls(raw["ok"], {k: NodeProc(**v) for k, v in (raw.get("nodes") or {}).items()}, raw.get("error"))


def call(socket_path: str, request: Request, timeout_s: float = 60.0) -> Reply:
    """One request to the launcher; RunError when it cannot be reached or refuses."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(socket_path)
            s.sendall(request.encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
    except OSError as e:
        raise RunError(
            f"the node launcher at {socket_path} cannot be reached ({e}); is the federation deployed (`cnlab deploy`)?"
        ) from e
    if not buf:
        raise RunError(f"the node launcher at {socket_path} closed the connection without a reply")
    reply = Reply.decode(buf)
    if not reply.ok:
        raise RunError(f"launcher: {request.op} {' '.join(request.devices)}: {reply.error}")
    return reply
