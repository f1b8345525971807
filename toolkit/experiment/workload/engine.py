"""The open-model engine: it starts every planned action at its planned time, whether or not
earlier ones have been answered (so a slow node shows as latency, not as less load), against each
user's home node over the management network, and records every operation in the history.

Set-up (before the clock starts): accounts for every user and one observer per node, the
initial objects with their participants (observers of every node that holds a participant
included), observers subscribed, and a wait until every initial object has reached every replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ...errors import RunError
from ..endpoints import Endpoint
from ..history import History
from ..observers import OBSERVER, Observers
from .object_ids import with_node_ids
from .plan import Action, ObjectPlan, WorkloadPlan

Progress = Callable[[str, dict[str, Any]], None]


class RequestFailed(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.status = status


def ops_for(action: Action) -> list[dict[str, Any]]:
    """The JSON operations a write sends; each leaves its uid in the document."""
    uid = action.uid
    if action.kind == "set_key":
        return [{"op": "set", "key": uid, "value": action.user}]
    if action.kind == "append":
        return [{"op": "append", "path": ["log"], "value": uid}]
    if action.kind == "edit_text":  # always at index 0: runs are never split (see observers.py)
        return [{"op": "insert_text", "path": ["notes"], "index": 0, "text": f"[{uid}]"}]
    raise ValueError(f"{action.kind} sends no ops")


# Set-up (the initial objects) is not measured: its requests wait this long rather than the
# workload's timeout_s, so a large federation that is busy while every object is created at once
# (hundreds of pushes) is not refused for being slow to set up.
SETUP_TIMEOUT_S = 120.0
INIT_OPS = [{"op": "set", "key": "notes", "type": "text", "value": ""}, {"op": "set", "key": "log", "type": "list"}]


class Engine:
    def __init__(
        self,
        plan: WorkloadPlan,
        endpoints: dict[str, Endpoint],
        history: History,
        *,
        timeout_s: float = 10.0,
        progress: Progress | None = None,
        max_connections: int = 256,
    ):
        self.plan, self.endpoints, self.history = plan, endpoints, history
        # the nodes derive an object's id from its creator and the proposed name: run under those ids
        self.plan, self.names = with_node_ids(plan, self.address)
        self.timeout_s = timeout_s
        self.progress = progress or (lambda _event, _info: None)
        self.max_connections = max_connections
        self.tokens: dict[str, str] = {}  # user -> token
        self.observer_tokens: dict[str, str] = {}  # device -> token
        self.session: aiohttp.ClientSession | None = None
        self.observer_session: aiohttp.ClientSession | None = None
        self.observers: Observers | None = None
        self.participants: dict[str, list[str]] = {o.id: list(o.participants) for o in self.plan.objects}
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = False

    # ---- helpers -------------------------------------------------------------------------------
    def user_node(self, user: str) -> str:
        return self.plan.users[user].node

    def address(self, user: str) -> str:
        return self.endpoints[self.user_node(user)].address(user)

    def nodes_of(self, oid: str) -> set[str]:
        return {self.user_node(u) for u in self.participants.get(oid, [])}

    async def request(
        self, method: str, node: str, path: str, token: str, body: Any = None, timeout_s: float | None = None
    ) -> Any:
        assert self.session is not None
        url = self.endpoints[node].url + path
        async with self.session.request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=timeout_s or self.timeout_s),
        ) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise RequestFailed(resp.status, text)
            return await resp.json() if resp.content_type == "application/json" else text

    async def health(self, node: str, timeout_s: float = 5.0) -> str:
        """How the node's /health answers now, for an error message: a node that answers at once
        but not the request that failed is stuck on that request, not down or overloaded. (Through
        the observers' pool, which has no limit: the workload's pool may be what is exhausted.)"""
        assert self.observer_session is not None
        t = time.monotonic()
        try:
            async with self.observer_session.get(
                self.endpoints[node].url + "/health", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                await resp.read()
                return f"its /health answers {resp.status} in {time.monotonic() - t:.2f} s"
        except (TimeoutError, aiohttp.ClientError) as exc:
            return f"its /health does not answer within {timeout_s:g} s either ({type(exc).__name__})"

    # ---- set-up --------------------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=64)
        )
        # observers hold a WebSocket per node (and per 60 objects) for the whole run: in the
        # workload's pool they would take every connection of a large federation
        self.observer_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.observers is not None:
            await self.observers.close()
        for session in (self.session, self.observer_session):
            if session is not None:
                await session.close()

    async def setup(self, settle_timeout_s: float = 120.0) -> None:
        sem = asyncio.Semaphore(32)

        async def account(node: str, name: str) -> tuple[str, str]:
            ep = self.endpoints[node]
            async with sem:
                for attempt in range(5):
                    try:
                        reply = await self.request(
                            "POST", node, "/api/admin/accounts", ep.admin_token, {"username": name}
                        )
                        return name, reply["token"]
                    except (TimeoutError, aiohttp.ClientError) as exc:
                        if attempt == 4:
                            raise RunError(f"creating account {name} on {node} ({ep.url}) failed: {exc}") from exc
                        await asyncio.sleep(0.5 * (attempt + 1))
                    except RequestFailed as exc:
                        raise RunError(f"creating account {name} on {node} ({ep.url}) failed: {exc}") from exc
            raise AssertionError("unreachable")

        self.progress("setup", {"step": "accounts", "users": len(self.plan.users)})
        obs = await asyncio.gather(*(account(n, OBSERVER) for n in self.endpoints))
        self.observer_tokens = {n: tok for n, (_, tok) in zip(self.endpoints, obs, strict=True)}
        users = await asyncio.gather(*(account(u.node, u.name) for u in self.plan.users.values()))
        self.tokens = dict(users)
        assert self.observer_session is not None
        self.observers = Observers(self.endpoints, self.observer_tokens, self.observer_session, self.history.now)
        self.progress("setup", {"step": "objects", "objects": len(self.plan.objects)})

        async def create(obj: ObjectPlan) -> None:
            async with sem:
                try:
                    await self.create_object(
                        obj.id, obj.creator, list(obj.participants), None, timeout_s=SETUP_TIMEOUT_S
                    )
                except (TimeoutError, aiohttp.ClientError, RequestFailed) as exc:
                    node = self.user_node(obj.creator)
                    raise RunError(
                        f"creating object {obj.id} on {node} ({self.endpoints[node].url}) failed: "
                        f"{type(exc).__name__}: {str(exc) or f'no answer within {SETUP_TIMEOUT_S:g} s'}"
                        f" ({await self.health(node)})"
                    ) from exc

        await asyncio.gather(*(create(o) for o in self.plan.objects))
        self.progress("setup", {"step": "settle", "objects": len(self.plan.objects)})
        deadline = time.monotonic() + settle_timeout_s
        while self.observers.pending():
            if time.monotonic() > deadline:
                pending = self.observers.pending()
                some = "; ".join(f"{n}: {', '.join(sorted(p)[:3])}" for n, p in sorted(pending.items())[:5])
                raise RunError(
                    f"the initial objects did not reach every replica within {settle_timeout_s:g} s: "
                    f"{sum(map(len, pending.values()))} replicas on {len(pending)} nodes are missing "
                    f"(e.g. {some})"
                )
            await asyncio.sleep(0.2)

    async def create_object(
        self, oid: str, creator: str, participants: list[str], uid: str | None, timeout_s: float | None = None
    ) -> None:
        node = self.user_node(creator)
        nodes = {self.user_node(u) for u in participants} | {node}
        others = [self.address(u) for u in participants if u != creator]
        others += [self.endpoints[n].address(OBSERVER) for n in sorted(nodes)]
        body = {"id": self.names[oid], "participants": others}
        created = await self.request("POST", node, "/api/objects", self.tokens[creator], body, timeout_s)
        if created.get("id") != oid:
            raise RequestFailed(409, f"the node named object {oid} {created.get('id')!r} (not a per-creator id)")
        self.participants[oid] = [creator, *[u for u in participants if u != creator]]
        ops = INIT_OPS + ([{"op": "set", "key": uid, "value": creator}] if uid else [])
        await self.request("POST", node, f"/api/objects/{oid}/ops", self.tokens[creator], {"ops": ops}, timeout_s)
        assert self.observers is not None
        await self.observers.watch(oid, nodes)

    # ---- the workload --------------------------------------------------------------------------
    async def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Start each action at its time (seconds after history.t0); then wait for the stragglers."""
        total = len(self.plan.actions)
        for i, action in enumerate(self.plan.actions):
            delay = action.at_s - self.history.now()
            if delay > 0:
                await asyncio.sleep(delay)
            if should_stop():
                self.stopped = True
                break
            task = asyncio.create_task(self.execute(action))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            if i % 20 == 0:
                self.progress("workload", {"started": i, "total": total, "in_flight": len(self.tasks)})
        await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def execute(self, action: Action) -> None:
        node = self.user_node(action.user)
        op = self.history.invoke(action.seq, action.kind, action.user, node, action.object, action.uid)
        try:
            await self._perform(action, node)
        except RequestFailed as exc:
            # a 4xx answer means the node refused it: it did not happen; 5xx may have
            self.history.complete(op, "fail" if exc.status < 500 else "info", str(exc))
        except TimeoutError:
            self.history.complete(op, "info" if action.is_write else "fail", f"no answer within {self.timeout_s:g} s")
        except aiohttp.ClientConnectorError as exc:  # not connected: the request never left
            self.history.complete(op, "fail", f"cannot connect: {exc}")
        except (aiohttp.ClientError, OSError) as exc:
            self.history.complete(op, "info" if action.is_write else "fail", f"{type(exc).__name__}: {exc}")
        else:
            self.history.complete(op, "ok")

    async def _perform(self, action: Action, node: str) -> None:
        token = self.tokens[action.user]
        oid = action.object
        if action.kind == "create":
            await self.create_object(oid, action.user, [action.user, *action.args.get("participants", [])], action.uid)
        elif action.kind == "add_participant":
            new = action.args["user"]
            new_node = self.user_node(new)
            add = [self.address(new), self.endpoints[new_node].address(OBSERVER)]
            await self.request("PATCH", node, f"/api/objects/{oid}", token, {"add": add})
            self.participants.setdefault(oid, []).append(new)
            assert self.observers is not None
            await self.observers.watch(oid, {new_node})
        elif action.kind == "read":
            await self.request("GET", node, f"/api/objects/{oid}", token)
        elif action.kind == "subscribe":
            await self._subscribe_once(node, oid, token)
        else:
            await self.request("POST", node, f"/api/objects/{oid}/ops", token, {"ops": ops_for(action)})

    async def _subscribe_once(self, node: str, oid: str, token: str) -> None:
        assert self.session is not None
        url = self.endpoints[node].url + "/api/ws"
        async with asyncio.timeout(self.timeout_s):
            async with self.session.ws_connect(url, params={"token": token}) as ws:
                await ws.send_json({"type": "subscribe", "object": oid, "id": oid})
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    data = msg.json()
                    if data.get("type") == "subscribed":
                        return
                    if data.get("type") == "error":
                        raise RequestFailed(404 if "unknown" in str(data.get("error")) else 400, str(data.get("error")))
                raise aiohttp.ServerDisconnectedError("the WebSocket closed before 'subscribed'")
