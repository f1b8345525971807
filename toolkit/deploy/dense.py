"""Dense mode: one forked host process runs many nodes in one asyncio loop.

For each node the host's thread enters the device's network namespace just long enough to create
and bind the listening sockets (a socket belongs to the namespace it was created in), and gives the
image's `start` hook a connector factory whose sockets are created the same way, so federation
traffic leaves from the right device. The host obeys its launcher over a socketpair: one JSON line
per request, `{"op": "start"|"stop"|"kill"|"pause"|"resume"|"status", "devices": [...]}`, answered
with `{"nodes": {device: {"state": "running"|"paused"|"stopped"|"exited", "error"?, "exit_code"?}}}`.
`pause`/`resume` freeze one node inside the shared loop (toolkit/deploy/suspend.py).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import socket
import traceback
from collections.abc import Callable
from typing import Any

from ..targets import nsops
from .protocol import LaunchNode, LaunchSpec
from .suspend import NODE, Suspender

log = logging.getLogger("cnlab.dense")
EXIT_CONFIG = 78


def netns_socket_factory(netns: str) -> Callable[[Any], socket.socket]:
    """An aiohttp `socket_factory`: outgoing sockets created inside network namespace `netns`."""

    def make(addr_info: Any) -> socket.socket:
        family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
        with nsops.netns(netns):
            s = socket.socket(family, type_, proto)
        s.setblocking(False)
        return s

    return make


def listening_sockets(node: LaunchNode, backlog: int = 128) -> dict[str, socket.socket]:
    """The node's listening sockets, created and bound inside its device's namespace."""
    out: dict[str, socket.socket] = {}
    with nsops.netns(node.netns):
        try:
            for name, addr in node.listen.items():
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                out[name] = s
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr["host"], int(addr["port"])))
                s.listen(backlog)
                s.setblocking(False)
        except OSError:
            for s in out.values():
                s.close()
            raise
    return out


class Host:
    def __init__(
        self,
        spec: LaunchSpec,
        group: int,
        control: socket.socket,
        load_config: Callable[[str], Any],
        start_hook: Callable[..., Any] | None,
    ):
        if start_hook is None:
            raise RuntimeError("the image has no launch.start hook: dense mode cannot host it")
        self.spec = spec
        self.group = group
        self.control = control
        self.load_config = load_config
        self.start_hook = start_hook
        self.running: dict[str, Any] = {}  # device -> the image's running-node handle
        self.sockets: dict[str, dict[str, socket.socket]] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self.suspender: Suspender | None = None

    def run(self) -> None:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        asyncio.run(self.main())

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        self.suspender = Suspender(loop)
        done = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, done.set)
        loop.add_signal_handler(signal.SIGINT, done.set)
        self.control.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=self.control)
        serving = asyncio.create_task(self.serve(reader, writer, done))
        await done.wait()
        serving.cancel()
        await self.stop(list(self.running))

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, done: asyncio.Event) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                devices = msg.get("devices") or []
                op = msg.get("op")
                if op == "start":
                    await self.start(devices)
                elif op in ("stop", "kill"):
                    await self.stop(devices)
                elif op in ("pause", "resume"):
                    self.pause(devices, op == "pause")
                writer.write(
                    (
                        json.dumps({"nodes": {d: self.status.get(d, {"state": "stopped"}) for d in devices}}) + "\n"
                    ).encode()
                )
                await writer.drain()
        finally:
            done.set()  # the launcher is gone: stop everything

    async def start(self, devices: list[str]) -> None:
        """Start nodes side by side (each start awaits its own storage and listeners)."""
        await asyncio.gather(*(self._start_one(d) for d in devices if d not in self.running))
        gc.collect()

    def pause(self, devices: list[str], pause: bool) -> None:
        """Freeze (or thaw) running nodes; in effect when this returns: no callback of a paused node
        runs from now on, and its sockets are out of the loop's selector."""
        assert self.suspender is not None
        for d in devices:
            if d not in self.running:
                continue
            if pause:
                self.suspender.pause(d)
            else:
                self.suspender.resume(d)
            self.status[d] = {"state": "paused" if pause else "running"}

    async def _start_one(self, d: str) -> None:
        node = self.spec.nodes[d]
        NODE.set(d)  # everything the node schedules carries its name (this task's own context)
        try:
            config = self.load_config(node.config_path)
        except Exception as e:
            self.status[d] = {"state": "exited", "exit_code": EXIT_CONFIG, "error": f"config refused: {e}"}
            return
        try:
            socks = listening_sockets(node)
            self.sockets[d] = socks
            factory = netns_socket_factory(node.netns)

            def connector(factory: Callable[[Any], socket.socket] = factory, **options: Any) -> Any:
                import aiohttp  # the node's own connector options, our sockets

                return aiohttp.TCPConnector(socket_factory=factory, **options)

            self.running[d] = await self.start_hook(config, sockets=socks, connector=connector)
            self.status[d] = {"state": "running"}
            with open(node.log_path, "a") as f:
                f.write(
                    f"{node.device} started in dense host {self.group} "
                    f"(log: {self.spec.state_dir}/host-{self.group}.log)\n"
                )
        except Exception as e:
            traceback.print_exc()
            for s in self.sockets.pop(d, {}).values():
                s.close()
            self.status[d] = {"state": "exited", "exit_code": 1, "error": f"{type(e).__name__}: {e}"}

    async def stop(self, devices: list[str]) -> None:
        """Stop nodes side by side: each waits on its own peers and listeners, not on the others."""
        await asyncio.gather(*(self._stop_one(d) for d in devices))

    async def _stop_one(self, device: str) -> None:
        if self.suspender is not None:
            self.suspender.resume(device)  # a paused node must run to stop, as SIGCONT before SIGTERM
        running = self.running.pop(device, None)
        if running is not None:
            try:
                await running.stop()
            except Exception:
                traceback.print_exc()
        for s in self.sockets.pop(device, {}).values():
            s.close()
        self.status[device] = {"state": "stopped"}
