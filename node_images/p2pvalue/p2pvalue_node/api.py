"""The client HTTP API, the live-update WebSocket and the metrics endpoint (aiohttp)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from typing import Any, ClassVar

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import ledger
from .documents import OBJECT_NAME_PATTERN
from .errors import ApiError
from .node import Denied, Invalid, Node, Subscriber
from .storage import StorageFailed
from .validation import F, Record, ValidationFailed, strict_json_loads
from .yupdate import MAX_NESTING, value_depth

log = logging.getLogger("p2pvalue.api")

OBJECT_ID = r"^[A-Za-z0-9_.-]{1,128}$"
JsonValue = Any

NODE_KEY: web.AppKey[Node] = web.AppKey("node", Node)


# -- bodies ------------------------------------------------------------------------------------
class _Body(Record):
    EXTRA = "forbid"
    STRICT = True


class CreateAccount(_Body):
    username: str
    FIELDS: ClassVar[dict[str, F]] = {"username": F("str", min_length=1, max_length=64)}


class CreateObject(_Body):
    id: str | None
    public: bool
    participants: list[str]
    FIELDS: ClassVar[dict[str, F]] = {
        # a proposed name: the object's id is derived from it and the creator (documents.object_id_for)
        "id": F(
            "str",
            default=None,
            optional=True,
            pattern=OBJECT_NAME_PATTERN,
            description=(
                "a proposed name; the object's id is NAME + '.' + the first 16 hex digits of "
                "sha256(creator + '\\0' + NAME), creator = user@domain (read it from the answer's id); "
                "without it the node chooses a random id"
            ),
        ),
        "public": F("bool", default=False),
        "participants": F("list", item=F("str"), factory=list, max_length=1000),
    }


class PatchObject(_Body):
    public: bool | None
    add: list[str]
    remove: list[str]
    FIELDS: ClassVar[dict[str, F]] = {
        "public": F("bool", default=None, optional=True),
        "add": F("list", item=F("str"), factory=list, max_length=1000),
        "remove": F("list", item=F("str"), factory=list, max_length=1000),
    }


_OP_NEEDS = {
    "set": ("key",),
    "delete_key": ("key",),
    "append": (),
    "insert_text": ("index", "text"),
    "delete_text": ("index", "length"),
}


class Op(_Body):
    op: str
    path: list[str | int]
    key: str | None
    value: JsonValue
    type: str
    index: int | None
    text: str | None
    length: int | None
    FIELDS: ClassVar[dict[str, F]] = {
        "op": F("literal", choices=("set", "delete_key", "append", "insert_text", "delete_text")),
        "path": F("list", item=F("str_or_int"), factory=list, max_length=64),
        "key": F("str", default=None, optional=True, max_length=1024),
        "value": F("any", default=None),
        "type": F("literal", default="value", choices=("value", "map", "list", "text")),
        "index": F("int", default=None, optional=True, ge=0, le=1 << 31),
        "text": F("str", default=None, optional=True),
        "length": F("int", default=None, optional=True, ge=0, le=1 << 31),
    }

    def check(self) -> None:
        for name in _OP_NEEDS[self.op]:
            if getattr(self, name) is None:
                raise ValueError(f"op {self.op} needs {name}")
        if value_depth(self.value) > MAX_NESTING:
            raise ValueError(f"value nests deeper than {MAX_NESTING} levels of arrays and objects")


class Ops(_Body):
    ops: list[Op]
    FIELDS: ClassVar[dict[str, F]] = {"ops": F("list", item=F(Op), min_length=1)}


def _parse(model: type[Record], body: bytes) -> Any:
    try:
        data = strict_json_loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"body is not valid JSON ({exc})") from None
    return _validate(model, data)


def _validate(model: type[Record], data: Any) -> Any:
    try:
        return model.validate(data)
    except ValidationFailed as exc:
        loc = ".".join(str(x) for x in exc.loc) or "body"
        raise ApiError(422, f"{loc}: {exc.msg}") from None
    except RecursionError:
        raise ApiError(422, "body is nested too deeply") from None


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


# -- middleware ----------------------------------------------------------------------------------
@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure becomes a JSON error; only a bug yields 500, and it is logged."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_error(exc.status, exc.message)
    except Denied as exc:
        return json_error(exc.status, str(exc))
    except Invalid as exc:
        return json_error(400, str(exc))
    except StorageFailed as exc:
        return json_error(503, f"not stored, try again later ({exc})")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal error")


def _metrics_middleware(node: Node) -> Any:
    @web.middleware
    async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            return await handler(request)
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            if route != "/api/ws":
                node.metrics.request_duration.labels(route=route, method=request.method).observe(
                    time.perf_counter() - started
                )

    return mw


# -- helpers -----------------------------------------------------------------------------------
def _bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:].strip()
    return request.query.get("token", "")


def _user(request: web.Request) -> str:
    node = request.app[NODE_KEY]
    token = _bearer(request)
    user = node.authenticate(token) if token else None
    if user is None:
        raise ApiError(401, "a valid client token is required (Authorization: Bearer TOKEN)")
    return user


def _admin(request: web.Request) -> None:
    token = _bearer(request)
    if not token or not request.app[NODE_KEY].is_admin(token):
        raise ApiError(401, "the admin token is required")


def _object_id(request: web.Request) -> str:
    oid = request.match_info["object_id"]
    import re

    if not re.match(OBJECT_ID, oid):
        raise ApiError(404, "no such object")
    return oid


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{what} is not valid base64") from None


async def _apply_binary(node: Node, meta: Any, update: bytes, user: str) -> Any:
    try:
        return await node.apply_update(meta, update, user, node.domain, int(time.time() * 1000), local=True)
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"invalid Yjs update: {exc}") from None
    except BaseException as exc:  # pyo3 panics derive from BaseException
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit, ApiError, Denied, StorageFailed)):
            raise
        raise ApiError(400, f"invalid Yjs update: {type(exc).__name__}") from None


async def _apply_ops(node: Node, meta: Any, ops: Ops, user: str) -> Any:
    try:
        return await node.apply_json_ops(meta, [o.dump() for o in ops.ops], user)
    except BaseException as exc:
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit, ApiError, Denied, StorageFailed)):
            raise
        raise ApiError(400, f"operation failed: {exc}") from None


# -- handlers ----------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return web.json_response({"status": "ok", "domain": node.domain})


async def openapi(request: web.Request) -> web.Response:
    from .openapi import document

    return web.json_response(document())


async def admin_create_account(request: web.Request) -> web.Response:
    _admin(request)
    body = _parse(CreateAccount, await request.read())
    node = request.app[NODE_KEY]
    token = await node.create_account(body.username)
    return web.json_response({"user": f"{body.username}@{node.domain}", "token": token}, status=201)


async def admin_list_accounts(request: web.Request) -> web.Response:
    _admin(request)
    node = request.app[NODE_KEY]
    return web.json_response({"accounts": [f"{u}@{node.domain}" for u in node.accounts()]})


async def whoami(request: web.Request) -> web.Response:
    return web.json_response({"user": _user(request)})


async def list_objects(request: web.Request) -> web.Response:
    user = _user(request)
    node = request.app[NODE_KEY]
    objs = [
        {"id": m.id, "creator": m.creator, "public": m.public, "participants": m.participants}
        for m in sorted(node.readable_objects(user), key=lambda m: (m.created_ms, m.id))
    ]
    return web.json_response({"objects": objs})


async def create_object(request: web.Request) -> web.Response:
    user = _user(request)
    body = _parse(CreateObject, await request.read())
    node = request.app[NODE_KEY]
    meta = await node.create_object(user, body.public, body.participants, body.id)
    return web.json_response(node.view(meta), status=201)


async def get_object(request: web.Request) -> web.Response:
    user = _user(request)
    node = request.app[NODE_KEY]
    meta = node.meta_for_read(user, _object_id(request))
    return web.json_response(node.view(meta))


async def patch_object(request: web.Request) -> web.Response:
    user = _user(request)
    oid = _object_id(request)
    body = _parse(PatchObject, await request.read())
    node = request.app[NODE_KEY]
    meta = await node.change_meta(user, oid, body.public, body.add, body.remove)
    return web.json_response(node.view(meta))


async def get_state(request: web.Request) -> web.Response:
    user = _user(request)
    node = request.app[NODE_KEY]
    meta = node.meta_for_read(user, _object_id(request))
    doc = node.load_doc(meta.id).doc
    sv = request.query.get("sv")
    try:
        data = doc.get_update(_b64decode(sv, "sv")) if sv else doc.get_update()
    except ValueError:
        raise ApiError(400, "sv is not a valid state vector") from None
    return web.Response(body=data, content_type="application/octet-stream")


async def post_update(request: web.Request) -> web.Response:
    user = _user(request)
    node = request.app[NODE_KEY]
    meta = node.meta_for_write(user, _object_id(request))
    update = await request.read()
    if not update:
        raise ApiError(400, "the body must be a binary Yjs update")
    applied = await _apply_binary(node, meta, update, user)
    return web.json_response(
        {"ok": True, "changed": applied.changed, "state_vector": base64.b64encode(meta.state_vector).decode()}
    )


async def post_ops(request: web.Request) -> web.Response:
    user = _user(request)
    node = request.app[NODE_KEY]
    meta = node.meta_for_write(user, _object_id(request))
    ops = _parse(Ops, await request.read())
    if len(ops.ops) > node.config.limits.max_ops_per_request:
        raise ApiError(413, f"at most {node.config.limits.max_ops_per_request} ops per request")
    applied = await _apply_ops(node, meta, ops, user)
    return web.json_response(
        {"ok": True, "changed": applied.changed, "state_vector": base64.b64encode(meta.state_vector).decode()}
    )


async def contributions(request: web.Request) -> web.Response:
    """The ledger rows the caller may see (objects they can read; all rows for the admin)."""
    node = request.app[NODE_KEY]
    token = _bearer(request)
    if token and node.is_admin(token):
        visible: set[str] | None = None
    else:
        visible = {m.id for m in node.readable_objects(_user(request))}
    contributor = request.query.get("contributor")
    object_id = request.query.get("object")
    rows = ledger.query(node.storage, contributor, object_id, visible)
    return web.json_response(
        {
            "contributions": [r.__dict__ for r in rows],
            "totals": ledger.totals(rows),
        }
    )


async def contribution_totals(request: web.Request) -> web.Response:
    """Node-wide totals (aggregates only), for any authenticated client or the admin."""
    node = request.app[NODE_KEY]
    token = _bearer(request)
    if not (token and node.is_admin(token)):
        _user(request)
    t = ledger.totals(ledger.query(node.storage))
    t.pop("per_contributor")
    t["domain"] = node.domain
    return web.json_response(t)


async def websocket(request: web.Request) -> web.StreamResponse:
    """Live updates. Client messages (JSON text frames):
    {"type": "subscribe", "object": ID}      -> {"type": "subscribed", "object", "state": base64 full update}
    {"type": "unsubscribe", "object": ID}    -> {"type": "unsubscribed", "object"}
    {"type": "update", "object", "update": base64, "id": N} -> {"type": "ack", "id", "object"} once durable
    {"type": "ops", "object", "ops": [...], "id": N}        -> {"type": "ack", ...}
    Errors come back as {"type": "error", "id"?, "error"}. Updates to subscribed objects arrive as
    {"type": "update", "object", "update", "origin_node", "origin_ts_ms"} (the sender's own included).
    """
    user = _user(request)
    node = request.app[NODE_KEY]
    # no permessage-deflate: messages are small and CPU on the devices is scarce
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=node.config.limits.max_body_bytes, compress=False)
    await ws.prepare(request)
    subscribed: set[str] = set()
    node.metrics.websocket_clients.inc()
    closers: set[asyncio.Task[None]] = set()

    async def close_slow() -> None:
        # the sender may be blocked on the client's full socket: stop it, try a 1008 close briefly, then
        # drop the connection (its queue is already freed)
        send_task.cancel()
        try:
            await asyncio.wait_for(ws.close(code=1008, message=b"client too slow"), timeout=2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        if request.transport is not None and not request.transport.is_closing():
            request.transport.abort()

    def dropped() -> None:
        node.metrics.websocket_dropped.inc()
        task = asyncio.get_running_loop().create_task(close_slow())
        closers.add(task)
        task.add_done_callback(closers.discard)

    sub = Subscriber(user, max_bytes=node.config.limits.max_websocket_queue_bytes, on_drop=dropped)

    async def sender() -> None:
        try:
            while not sub.dropped:
                await sub.wake.wait()
                sub.wake.clear()
                while not sub.dropped and (text := sub.take()) is not None:
                    await ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return  # the client went away

    send_task = asyncio.create_task(sender())
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.BINARY:
                    sub.offer({"type": "error", "error": "send JSON text frames"})
                continue
            reply = await _ws_message(node, user, sub, subscribed, msg.data)
            if reply is not None:
                sub.offer(reply)
            if sub.dropped:
                break
    except ConnectionError:
        pass  # the client went away while aiohttp answered its ping (a pong on a closing transport)
    finally:
        for oid in subscribed:
            node.unsubscribe(oid, sub)
        send_task.cancel()
        node.metrics.websocket_clients.dec()
    return ws


async def _ws_message(node: Node, user: str, sub: Subscriber, subscribed: set[str], text: str) -> dict[str, Any] | None:
    try:
        data = strict_json_loads(text)
    except (ValueError, RecursionError) as exc:
        return {"type": "error", "error": f"not valid JSON ({exc})"}
    if not isinstance(data, dict):
        return {"type": "error", "error": "a JSON object is expected"}
    mid = data.get("id")
    if not isinstance(mid, (int, str, type(None))):
        mid = None
    kind, oid = data.get("type"), data.get("object")
    try:
        if not isinstance(oid, str):
            raise ApiError(400, "object must be a string")
        if kind == "subscribe":
            meta = node.meta_for_read(user, oid)
            if oid not in subscribed and len(subscribed) >= node.config.limits.max_websocket_subscriptions:
                raise ApiError(413, "too many subscriptions on this connection")
            node.subscribe(oid, sub)
            subscribed.add(oid)
            state = node.load_doc(meta.id).doc.get_update()
            return {"type": "subscribed", "object": oid, "state": base64.b64encode(state).decode()}
        if kind == "unsubscribe":
            node.unsubscribe(oid, sub)
            subscribed.discard(oid)
            return {"type": "unsubscribed", "object": oid}
        if kind == "update":
            meta = node.meta_for_write(user, oid)
            upd = data.get("update")
            if not isinstance(upd, str):
                raise ApiError(400, "update must be a base64 string")
            await _apply_binary(node, meta, _b64decode(upd, "update"), user)
            return {"type": "ack", "id": mid, "object": oid}
        if kind == "ops":
            meta = node.meta_for_write(user, oid)
            ops = _validate(Ops, {"ops": data.get("ops")})
            if len(ops.ops) > node.config.limits.max_ops_per_request:
                raise ApiError(413, f"at most {node.config.limits.max_ops_per_request} ops per request")
            await _apply_ops(node, meta, ops, user)
            return {"type": "ack", "id": mid, "object": oid}
        raise ApiError(400, "type must be subscribe, unsubscribe, update or ops")
    except ApiError as exc:
        return {"type": "error", "id": mid, "error": exc.message}
    except (Denied, Invalid) as exc:
        return {"type": "error", "id": mid, "error": str(exc)}
    except StorageFailed as exc:
        return {"type": "error", "id": mid, "error": f"not stored, try again later ({exc})"}
    except Exception:  # a bug: answer on the socket (the HTTP response is already sent) and log it
        log.exception("unhandled error in a WebSocket message")
        return {"type": "error", "id": mid, "error": "internal error"}


def client_app(node: Node) -> web.Application:
    app = web.Application(
        client_max_size=node.config.limits.max_body_bytes, middlewares=[_metrics_middleware(node), error_middleware]
    )
    app[NODE_KEY] = node
    r = app.router
    r.add_get("/health", health)
    r.add_get("/openapi.json", openapi)
    r.add_post("/api/admin/accounts", admin_create_account)
    r.add_get("/api/admin/accounts", admin_list_accounts)
    r.add_get("/api/whoami", whoami)
    r.add_get("/api/objects", list_objects)
    r.add_post("/api/objects", create_object)
    r.add_get("/api/objects/{object_id}", get_object)
    r.add_patch("/api/objects/{object_id}", patch_object)
    r.add_get("/api/objects/{object_id}/state", get_state)
    r.add_post("/api/objects/{object_id}/update", post_update)
    r.add_post("/api/objects/{object_id}/ops", post_ops)
    r.add_get("/api/contributions", contributions)
    r.add_get("/api/contributions/totals", contribution_totals)
    r.add_get("/api/ws", websocket)
    return app


def metrics_app(node: Node) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(node.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(middlewares=[error_middleware])
    app[NODE_KEY] = node
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    return app
