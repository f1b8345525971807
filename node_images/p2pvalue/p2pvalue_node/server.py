"""Start and stop a node: storage, federation tasks and the three listeners (client, federation, metrics)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
from aiohttp import web

from .antientropy import AntiEntropy
from .api import client_app, metrics_app
from .config import NodeConfig
from .errors import StartupError
from .federation import Federation, federation_body_limit
from .keys import SigningKey, load_key
from .listeners import ConnectionGuard, GuardedSite, install_accept_error_limiter, raise_file_limit
from .metrics import NodeMetrics
from .node import Node
from .outbox import Outbox

log = logging.getLogger("p2pvalue.server")

STOP_BUDGET_S = 5.0  # a node stops within this of SIGTERM
SHUTDOWN_TIMEOUT_S = 1.0  # how long open requests and WebSockets get to finish at stop


@dataclass
class RunningNode:
    node: Node
    federation: Federation
    outbox: Outbox
    antientropy: AntiEntropy
    runners: list[web.AppRunner] = field(default_factory=list)

    async def stop(self) -> None:
        """Stop within STOP_BUDGET_S whatever is in flight: the outbox is durable, so pushes in flight
        are abandoned (and sent again after the restart); open requests get SHUTDOWN_TIMEOUT_S to end."""
        await self.antientropy.close()
        await self.outbox.close()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(r.cleanup() for r in self.runners), return_exceptions=True),
                timeout=STOP_BUDGET_S - 2.5,
            )
        except TimeoutError:
            log.warning("listeners did not stop in time; closing anyway")
        await self.federation.close()
        self.node.close()
        if self.node.data_dir_lock is not None:
            self.node.data_dir_lock.close()
            self.node.data_dir_lock = None


def lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on DATA_DIR/node.lock for the node's life: two nodes on one data dir
    would corrupt each other's view of it."""
    import fcntl

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        f = open(data_dir / "node.lock", "ab")
    except OSError as exc:
        raise StartupError(f"data_dir {data_dir}: cannot use it ({exc.strerror or exc})") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise StartupError(f"data_dir {data_dir}: another node is running on it (node.lock is held)") from None
    return f


async def start_node(
    config: NodeConfig,
    key: SigningKey | None = None,
    metrics: NodeMetrics | None = None,
    *,
    sockets: dict[str, socket.socket] | None = None,
    connector: Callable[..., aiohttp.BaseConnector] | None = None,
) -> RunningNode:
    """Start a node. A host that runs many nodes in one process (cnlab's dense mode) passes
    `sockets`: listening sockets it made for "client", "federation" and "metrics" (in the right
    network namespace; the config's listen addresses then only name them), and `connector`:
    called with the node's aiohttp.TCPConnector options, it returns the connector for outgoing
    federation requests (e.g. a TCPConnector whose socket_factory creates sockets in the right
    namespace)."""
    key = key or load_key(config.signing_key)
    raise_file_limit()
    install_accept_error_limiter(asyncio.get_running_loop())
    lock = lock_data_dir(config.data_dir)
    try:
        node = Node(config, key, metrics)
    except (OSError, sqlite3.Error) as exc:
        lock.close()
        raise StartupError(f"data_dir {config.data_dir}: cannot use it ({exc})") from None
    node.data_dir_lock = lock
    fed = Federation(node, connector=connector)
    outbox = Outbox(fed)
    ae = AntiEntropy(fed)
    running = RunningNode(node, fed, outbox, ae)
    try:
        await fed.start()
        lim = config.limits
        # the federation listener keeps idle peer connections a little longer than peers keep them
        fed_keepalive_s = config.federation.effective_keepalive_s + 5
        apps = [
            (client_app(node), config.listen.client, "client", lim.max_client_connections, 75.0),
            (
                fed.app(federation_body_limit(config.limits.max_body_bytes)),
                config.listen.federation,
                "federation",
                lim.max_federation_connections,
                fed_keepalive_s,
            ),
            (metrics_app(node), config.listen.metrics, "metrics", lim.max_metrics_connections, 75.0),
        ]
        for app, addr, name, cap, keepalive_s in apps:
            runner = web.AppRunner(
                app,
                access_log=None,
                handle_signals=False,
                keepalive_timeout=keepalive_s,
                shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            )
            await runner.setup()
            running.runners.append(runner)
            guard = ConnectionGuard(
                name,
                cap,
                lim.header_timeout_s,
                node.metrics.connection_refused(name),
                node.metrics.connections_accepted.labels(listener=name).inc,
            )
            await GuardedSite(runner, guard, addr.host, addr.port, sock=(sockets or {}).get(name)).start()
    except BaseException:
        await running.stop()
        raise
    outbox.start()
    ae.start()
    log.info(
        "node %s serving: client %s:%d, federation %s:%d, metrics %s:%d",
        config.domain,
        config.listen.client.host,
        config.listen.client.port,
        config.listen.federation.host,
        config.listen.federation.port,
        config.listen.metrics.host,
        config.listen.metrics.port,
    )
    return running


async def start_shared_node(
    config: NodeConfig,
    *,
    sockets: dict[str, socket.socket] | None = None,
    connector: Callable[..., aiohttp.BaseConnector] | None = None,
) -> RunningNode:
    """start_node for a node that shares its process with others (cnlab's dense mode): without
    the process_* metrics, which would describe the shared process once per node and cost each
    scrape a walk of the process's open files."""
    return await start_node(
        config, metrics=NodeMetrics(config.domain, with_process=False), sockets=sockets, connector=connector
    )


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
