"""Start and stop a node: storage, federation tasks and the three listeners (client, federation, metrics)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from .antientropy import AntiEntropy
from .api import client_app, metrics_app
from .config import NodeConfig
from .federation import Federation
from .keys import SigningKey, load_key
from .metrics import NodeMetrics
from .node import Node
from .outbox import Outbox

log = logging.getLogger("p2pvalue.server")


@dataclass
class RunningNode:
    node: Node
    federation: Federation
    outbox: Outbox
    antientropy: AntiEntropy
    runners: list[web.AppRunner] = field(default_factory=list)

    async def stop(self) -> None:
        await self.antientropy.close()
        await self.outbox.close()
        for r in self.runners:
            await r.cleanup()
        await self.federation.close()
        self.node.close()


async def start_node(config: NodeConfig, key: SigningKey | None = None,
                     metrics: NodeMetrics | None = None, *,
                     sockets: dict[str, socket.socket] | None = None,
                     connector: Callable[[], aiohttp.BaseConnector] | None = None) -> RunningNode:
    """Start a node. A host that runs many nodes in one process (cnlab's dense mode) passes
    `sockets`: listening sockets it made for "client", "federation" and "metrics" (in the right
    network namespace; the config's listen addresses then only name them), and `connector`: a
    factory of the aiohttp connector for outgoing federation requests (whose sockets it creates
    in the right namespace)."""
    key = key or load_key(config.signing_key)
    node = Node(config, key, metrics)
    fed = Federation(node, connector=connector)
    outbox = Outbox(fed)
    ae = AntiEntropy(fed)
    running = RunningNode(node, fed, outbox, ae)
    try:
        await fed.start()
        apps = [
            ("client", client_app(node), config.listen.client),
            ("federation", fed.app(config.limits.max_body_bytes), config.listen.federation),
            ("metrics", metrics_app(node), config.listen.metrics),
        ]
        for name, app, addr in apps:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            running.runners.append(runner)
            sock = (sockets or {}).get(name)
            if sock is not None:
                await web.SockSite(runner, sock).start()
            else:
                await web.TCPSite(runner, addr.host, addr.port, reuse_address=True).start()
    except BaseException:
        await running.stop()
        raise
    outbox.start()
    ae.start()
    log.info("node %s serving: client %s:%d, federation %s:%d, metrics %s:%d", config.domain,
             config.listen.client.host, config.listen.client.port, config.listen.federation.host,
             config.listen.federation.port, config.listen.metrics.host, config.listen.metrics.port)
    return running


def settle_memory() -> None:
    """After start-up: collect the garbage start-up left, keep the surviving start-up objects out of
    later collections, and hand freed heap pages back to the system (glibc's malloc_trim; other C
    libraries such as musl have no such call and are left alone)."""
    import gc

    gc.collect()
    gc.freeze()
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None and getattr(libc, "gnu_get_libc_version", None) is not None:
            trim(0)
    except (OSError, AttributeError):
        pass


async def serve_forever(config: NodeConfig) -> None:
    import signal

    # the commit and checkpoint threads need the GIL for a moment after each fsync; a shorter switch
    # interval than the default 5 ms lets them take it from a busy event loop sooner
    sys.setswitchinterval(0.001)
    running = await start_node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    settle_memory()
    print(f"p2pvalue-node {config.domain} ready", flush=True)
    await stop.wait()
    await running.stop()
