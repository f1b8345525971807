"""A throwaway lab for the wire's own tests and benchmarks: two device namespaces, one wire.

    dev A (ns cwXXXX-a)  l<i> ==veth== a<i>  [wire ns cwXXXX-w]  b<i> ==veth== l<i>  dev B (ns cwXXXX-b)
                          198.18.<i>.1/24                                      198.18.<i>.2/24

Link i is "l<i>"; forward = A->B. Everything carries a random `cw<4 hex>` prefix and close()
deletes exactly the namespaces it created (which removes their veths) and stops the wire it
started. Not used by the executor, which builds its own namespaces.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import RunError
from toolkit.targets import NetnsTarget
from toolkit.topology.direction import direction_from_dict
from toolkit.wire.control import WireClient
from toolkit.wire.launch import WireProcess
from toolkit.wire.linux import disable_offloads
from toolkit.wire.spec import LinkSpec, WireSpec


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), check=False, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RunError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


@dataclass
class WireLab:
    links: int = 1
    prefix: str = field(default_factory=lambda: "cw" + secrets.token_hex(2))
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cnlab-wire-")))
    created: list[str] = field(default_factory=list)
    wires: list[WireProcess] = field(default_factory=list)
    keep_workdir: bool = False  # keep specs and wire logs after close()

    @property
    def wire(self) -> WireProcess | None:
        """The first (usually only) wire process."""
        return self.wires[0] if self.wires else None

    @property
    def ns_a(self) -> str:
        return f"{self.prefix}-a"

    @property
    def ns_b(self) -> str:
        return f"{self.prefix}-b"

    @property
    def ns_w(self) -> str:
        return f"{self.prefix}-w"

    @property
    def control(self) -> Path:
        return self.workdir / "wire.sock"

    @property
    def log(self) -> Path:
        return self.workdir / "wire.log"

    @staticmethod
    def addr_a(i: int) -> str:
        return f"198.18.{i}.1"

    @staticmethod
    def addr_b(i: int) -> str:
        return f"198.18.{i}.2"

    def build(self) -> None:
        for ns in (self.ns_a, self.ns_b, self.ns_w):
            self.created.append(ns)  # recorded first, so close() removes it even if add fails midway
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        for i in range(self.links):
            for side, dev_ns, addr in (("a", self.ns_a, self.addr_a(i)), ("b", self.ns_b, self.addr_b(i))):
                wire_if, dev_if = f"{side}{i}", f"l{i}"
                run(
                    "ip",
                    "-n",
                    self.ns_w,
                    "link",
                    "add",
                    wire_if,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    dev_if,
                    "netns",
                    dev_ns,
                )
                disable_offloads(dev_if, NetnsTarget(dev_ns, dev_ns))
                run("ip", "-n", dev_ns, "addr", "add", f"{addr}/24", "dev", dev_if)
                run("ip", "netns", "exec", dev_ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{dev_if}.disable_ipv6=1")
                run("ip", "-n", dev_ns, "link", "set", dev_if, "up")
            # Static neighbours: no ARP crosses the wire, so frame counts are exactly the test's.
            mac_a, mac_b = self._mac(self.ns_a, f"l{i}"), self._mac(self.ns_b, f"l{i}")
            run(
                "ip",
                "-n",
                self.ns_a,
                "neigh",
                "replace",
                self.addr_b(i),
                "lladdr",
                mac_b,
                "dev",
                f"l{i}",
                "nud",
                "permanent",
            )
            run(
                "ip",
                "-n",
                self.ns_b,
                "neigh",
                "replace",
                self.addr_a(i),
                "lladdr",
                mac_a,
                "dev",
                f"l{i}",
                "nud",
                "permanent",
            )

    @staticmethod
    def _mac(ns: str, ifname: str) -> str:
        return str(json.loads(run("ip", "-n", ns, "-j", "link", "show", "dev", ifname).stdout)[0]["address"])

    def spec(
        self, directions: dict[int, tuple[dict[str, Any], dict[str, Any]]] | None = None, seed: int = 42
    ) -> WireSpec:
        directions = directions or {}
        links = []
        for i in range(self.links):
            fwd, rev = directions.get(i, ({}, {}))
            links.append(LinkSpec(f"l{i}", f"a{i}", f"b{i}", direction_from_dict(fwd), direction_from_dict(rev)))
        return WireSpec(seed, tuple(links))

    def start_wire(self, spec: WireSpec, extra_args: list[str] | tuple[str, ...] = ()) -> WireClient:
        """Start one wire process for the whole spec (stopping any running ones first)."""
        return self.start_shards([spec], extra_args)[0]

    def start_shards(self, specs: list[WireSpec], extra_args: list[str] | tuple[str, ...] = ()) -> list[WireClient]:
        """One wire process per spec; the first uses `control`/`log`, the others numbered paths."""
        self.stop_wires()
        clients = []
        for k, spec in enumerate(specs):
            suffix = "" if k == 0 else f"-{k}"
            path = self.workdir / f"spec{suffix}.json"
            spec.write(path)
            control = self.control if k == 0 else self.workdir / f"wire{suffix}.sock"
            log = self.log if k == 0 else self.workdir / f"wire{suffix}.log"
            self.wires.append(
                WireProcess.start(NetnsTarget(self.ns_w, self.ns_w), path, control, log, extra_args=extra_args)
            )
            clients.append(WireClient(control))
        return clients

    def stop_wires(self) -> None:
        while self.wires:
            self.wires.pop().stop()

    def in_a(self, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns_a, *cmd, **kw)

    def in_b(self, *cmd: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns_b, *cmd, **kw)

    def close(self) -> None:
        self.stop_wires()
        for ns in reversed(self.created):
            run("ip", "netns", "del", ns, check=False)
        self.created.clear()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> WireLab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
