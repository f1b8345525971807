"""Federation: signed server-to-server HTTP, peer state, and the incoming push and sync endpoints.

Protocol (JSON over HTTP, every request and every response signed, see signing.py):
  POST /federation/v1/push  {"items": [{"object_id", "meta", "updates": [{"update" (base64 Yjs update),
                            "origin_node", "origin_ts_ms", "author", "repair"}], "credits": [CREDIT]}]}
                            -> {"results": [{"object_id", "ok", "error"?, "retry"?}]}
  POST /federation/v1/sync  {"objects": [{"id", "sv" (base64 state vector), "meta", "cs"}], "credits": true,
                             "after"?, "upto"?}
                            -> {"objects": [{"id", "sv", "meta", "update" (base64 or null), "credits"?}]}
A push is answered per item; a rejected item is not retried, unless its answer says "retry": true (the
object is not known there yet because its home's announcement has not arrived: the sender keeps it and
tries again after a backoff, a bounded number of times). Sync is the anti-entropy exchange.
CREDIT is a ledger credit signed by the author's home node (ledger.Credit.to_wire); "cs" is the
requester's credit summary of the object, and the answer lists the responder's credits of each object
whose summary differs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from . import ledger
from .documents import decode_state_vector, lacks, split_address
from .errors import ApiError
from .node import Denied, Invalid, Node, NotAnnounced
from .replay import PersistentNonces
from .signing import H_NONCE, H_ORIGIN, H_SIGNATURE, SignatureRejected, Verifier, sign_headers
from .storage import StorageFailed
from .validation import F, Record, ValidationFailed, strict_json_loads

log = logging.getLogger("p2pvalue.federation")

ERROR_BODY_BYTES = 4096  # the most read of a peer's error answer
PUSH_PATH = "/federation/v1/push"
SYNC_PATH = "/federation/v1/sync"
OBJECT_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"


class FederationError(Exception):
    """A failed exchange with a peer; `permanent` when retrying the same request cannot help."""

    def __init__(self, message: str, permanent: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


class _Model(Record):
    EXTRA = "ignore"


class WireUpdate(_Model):
    update: str
    origin_node: str
    origin_ts_ms: int
    author: str | None
    repair: bool
    FIELDS: ClassVar[dict[str, F]] = {
        "update": F("str", max_length=64 << 20),
        "origin_node": F("str", max_length=253),
        "origin_ts_ms": F("int"),
        "author": F("str", default=None, optional=True, max_length=320),
        "repair": F("bool", default=False),
    }


class PushItem(_Model):
    object_id: str
    meta: dict[str, Any] | None
    updates: list[WireUpdate]
    credits: list[Any]
    FIELDS: ClassVar[dict[str, F]] = {
        "object_id": F("str", pattern=OBJECT_ID_PATTERN),
        "meta": F("dict", default=None, optional=True),
        "updates": F("list", item=F(WireUpdate), factory=list, max_length=10_000),
        # ledger credits signed by their authors' home nodes (ledger.Credit.to_wire), checked on arrival
        "credits": F("list", item=F("any"), factory=list, max_length=100_000),
    }


class PushBody(_Model):
    items: list[PushItem]
    FIELDS: ClassVar[dict[str, F]] = {"items": F("list", item=F(PushItem), max_length=10_000)}


class SyncEntry(_Model):
    id: str
    sv: str
    meta: dict[str, Any] | None
    cs: str | None
    FIELDS: ClassVar[dict[str, F]] = {
        "id": F("str", pattern=OBJECT_ID_PATTERN),
        "sv": F("str"),
        "meta": F("dict", default=None, optional=True),
        # the requester's credit summary of the object (ledger.summaries); when it differs from the
        # responder's, the answer carries the responder's credits of the object
        "cs": F("str", default=None, optional=True, max_length=64),
    }


class SyncBody(_Model):
    objects: list[SyncEntry]
    after: str | None
    upto: str | None
    credits: bool
    FIELDS: ClassVar[dict[str, F]] = {
        "objects": F("list", item=F(SyncEntry), max_length=1_000_000),
        # the requester reconciles ledger credits (nodes from before credits existed leave this out)
        "credits": F("bool", default=False),
        # a page of a paged round covers the object ids in (after, upto]; None is open-ended. The
        # responder adds the shared objects of that range the requester did not list.
        "after": F("str", default=None, optional=True, max_length=128),
        "upto": F("str", default=None, optional=True, max_length=128),
    }


def federation_body_limit(max_body_bytes: int) -> int:
    """The federation listener's body limit: room for one pushed update of the largest size a client may
    send (base64 makes it 4/3 larger) plus its JSON envelope, so an accepted update always fits a push."""
    return 2 * max_body_bytes + (64 << 10)


SYNC_RESPONSE_UPDATE_BYTES = 16 << 20  # updates a sync answer carries at most; the rest waits a round


@dataclass
class Peer:
    domain: str
    address: str
    reachable: bool | None = None  # None: not contacted yet
    failures: int = 0
    last_contact: float = 0.0
    batch: int = 256  # outbox entries per push; halved when the peer finds a push too large

    # made when first used: a node may trust thousands of peers and talk to few of them
    @cached_property
    def wake(self) -> asyncio.Event:
        """The outbox has work for the peer, or its backoff is over (the peer is back)."""
        return asyncio.Event()

    @cached_property
    def ae_trigger(self) -> asyncio.Event:
        """Run an anti-entropy round now (the peer is back)."""
        return asyncio.Event()


class Federation:
    """Outgoing signed requests and the state of each trusted peer."""

    def __init__(self, node: Node, connector: Any = None) -> None:
        self.node = node
        # (**TCPConnector options) -> connector; a host running many nodes makes their sockets
        self.connector_factory = connector or aiohttp.TCPConnector
        cfg = node.config
        self.peers: dict[str, Peer] = {p.domain: Peer(p.domain, p.address) for p in cfg.trusted_peers}
        self.verifier = Verifier(
            node.domain,
            {p.domain: p.public_key for p in cfg.trusted_peers},
            max_skew_s=cfg.federation.max_clock_skew_s,
            nonces=PersistentNonces(node.storage),
        )
        self.session: aiohttp.ClientSession | None = None
        node.metrics.peers_configured.set(len(self.peers))
        node.metrics.peers_reachable.set_function(lambda: sum(1 for p in self.peers.values() if p.reachable))

    async def start(self) -> None:
        fed = self.node.config.federation
        timeout = aiohttp.ClientTimeout(total=fed.request_timeout_s)
        # idle connections to a peer are kept longer than the anti-entropy interval (aiohttp's default is
        # 15 s), so the next round or edit does not pay a TCP handshake over a slow multi-hop path
        connector = self.connector_factory(limit_per_host=4, keepalive_timeout=fed.effective_keepalive_s)
        self.session = aiohttp.ClientSession(timeout=timeout, connector=connector)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def contact(self, domain: str, ok: bool) -> None:
        """Record the outcome of talking to a peer; coming back after a failure starts a catch-up."""
        peer = self.peers.get(domain)
        if peer is None:
            return
        was = peer.reachable
        peer.reachable = ok
        if ok:
            peer.last_contact = time.time()
            if was is False:
                peer.failures = 0
                peer.wake.set()
                peer.ae_trigger.set()

    async def post(self, domain: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a signed request; verify the signed response; return its JSON."""
        peer = self.peers[domain]
        assert self.session is not None
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = sign_headers(self.node.key, "POST", path, self.node.domain, domain, body)
        headers["Content-Type"] = "application/json"
        limit = self.node.config.federation.max_response_bytes
        try:
            async with self.session.post(peer.address + path, data=body, headers=headers) as resp:
                if resp.status != 200:
                    # only a signed answer from the peer itself can make us drop what we sent
                    data = await _read_bounded(resp, ERROR_BODY_BYTES)
                    try:
                        self.verifier.verify_response(path, resp.headers, data, domain, headers[H_NONCE])
                        signed = True
                    except SignatureRejected:
                        signed = False
                    permanent = signed and resp.status in (400, 404, 413, 422)
                    raise FederationError(
                        f"{domain} answered {resp.status}{'' if signed else ' (unsigned)'}: {data[:200]!r}",
                        permanent,
                        resp.status,
                    )
                if H_SIGNATURE not in resp.headers:
                    raise FederationError(f"{domain}: response signature rejected (unsigned response)")
                if resp.content_length is not None and resp.content_length > limit:
                    raise FederationError(
                        f"{domain}: response of {resp.content_length} bytes is over "
                        f"federation.max_response_bytes ({limit})"
                    )
                data = await _read_bounded(resp, limit)
                try:
                    self.verifier.verify_response(path, resp.headers, data, domain, headers[H_NONCE])
                except SignatureRejected as exc:
                    raise FederationError(f"{domain}: response signature rejected ({exc.reason})") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise FederationError(f"{domain}: {type(exc).__name__}: {exc}") from None
        try:
            out = json.loads(data)
        except ValueError:
            raise FederationError(f"{domain}: response is not JSON") from None
        if not isinstance(out, dict):
            raise FederationError(f"{domain}: response is not a JSON object")
        return out

    # -- incoming ------------------------------------------------------------------------------
    async def _verified(self, request: web.Request) -> tuple[str, bytes]:
        body = await request.read()
        try:
            origin = self.verifier.verify(request.method, request.path_qs, request.headers, body)
        except SignatureRejected as exc:
            self.node.metrics.federation_rejected.labels(reason=exc.reason.split(" ")[0]).inc()
            raise ApiError(exc.status, exc.reason) from None
        self.contact(origin, True)
        self.node.metrics.federation_received.labels(path=request.path).inc()
        return origin, body

    def _signed(self, request: web.Request, origin: str, payload: dict[str, Any]) -> web.Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = sign_headers(
            self.node.key, "RESPONSE", request.path_qs, self.node.domain, origin, body, nonce=request.headers[H_NONCE]
        )
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def handle_push(self, request: web.Request) -> web.Response:
        origin, body = await self._verified(request)
        parsed = _parse(PushBody, body)
        results = []
        for item in parsed.items:
            try:
                await self.receive_item(origin, item)
                results.append({"object_id": item.object_id, "ok": True})
            except NotAnnounced as exc:
                results.append({"object_id": item.object_id, "ok": False, "error": str(exc), "retry": True})
            except (Denied, Invalid, ValueError) as exc:
                results.append({"object_id": item.object_id, "ok": False, "error": str(exc)})
            except StorageFailed as exc:
                # not the sender's fault: the whole push is answered 503 and stays in its outbox
                raise ApiError(503, f"not stored, try again later ({exc})") from None
            except Exception as exc:  # e.g. an update pycrdt cannot integrate: refuse the item, keep serving
                log.warning("push from %s: object %s refused: %r", origin, item.object_id, exc)
                results.append({"object_id": item.object_id, "ok": False, "error": "update refused"})
        return self._signed(request, origin, {"results": results})

    async def receive_item(self, origin: str, item: PushItem) -> int:
        """Apply one pushed item; return how many of its updates changed local state."""
        node = self.node
        meta = await node.accept_remote_meta(origin, item.object_id, item.meta)
        # counted in the same transaction as the item's last update (one commit), or on their own
        credits = node.verified_credits(meta, item.credits) if item.credits else []
        changed = 0
        for i, u in enumerate(item.updates):
            raw = _b64(u.update, "update")
            if not u.repair and u.origin_node != origin:
                raise Invalid("a pushed update must originate at the sending node")  # no relaying
            # a peer can only credit its own users in this node's ledger, and never through a repair
            parts = split_address(u.author) if u.author and not u.repair else None
            author = u.author if parts is not None and parts[1] == origin else None
            last = i == len(item.updates) - 1
            applied = await node.apply_update(
                meta,
                raw,
                author,
                u.origin_node,
                u.origin_ts_ms,
                local=False,
                repair=u.repair,
                credits=credits if last else None,
            )
            if u.repair:
                if applied.changed or applied.inserted:
                    node.metrics.antientropy_repaired.inc()
            elif applied.inserted:
                node.metrics.propagation_delay.observe(max(0.0, time.time() - u.origin_ts_ms / 1000.0))
            changed += int(applied.changed)
        if credits and not item.updates:
            await node.count_credits(credits)
        return changed

    async def handle_sync(self, request: web.Request) -> web.Response:
        origin, body = await self._verified(request)
        parsed = _parse(SyncBody, body)
        node = self.node
        out: list[dict[str, Any]] = []
        asked: set[str] = set()
        budget = [SYNC_RESPONSE_UPDATE_BYTES]
        summaries = ledger.summaries(node.storage) if parsed.credits else {}

        def credits(oid: str, theirs: str | None) -> list[ledger.Credit] | None:
            # the responder's credits of an object whose credit summary differs from the requester's
            mine = summaries.get(oid, ledger.EMPTY_SUMMARY)
            if not parsed.credits or mine == (theirs or ledger.EMPTY_SUMMARY):
                return None
            return node.signed_credits(oid)

        for entry in parsed.objects:
            asked.add(entry.id)
            their_raw = _b64(entry.sv, "sv")
            try:
                theirs = decode_state_vector(their_raw)
                meta = await node.accept_remote_meta(origin, entry.id, entry.meta)
            except (Denied, Invalid, ValueError):
                continue  # not shared with the origin: say nothing about it
            update = None
            if lacks(decode_state_vector(meta.state_vector), theirs):
                try:
                    update = node.load_doc(entry.id).doc.get_update(their_raw)
                except (ValueError, Denied):  # e.g. quarantined here
                    continue
            out.append(_sync_entry(meta, update, budget, credits(entry.id, entry.cs)))
        for meta in node.shared_with(origin):
            in_range = (parsed.after is None or meta.id > parsed.after) and (
                parsed.upto is None or meta.id <= parsed.upto
            )
            if meta.id not in asked and in_range:
                try:
                    out.append(
                        _sync_entry(meta, node.load_doc(meta.id).doc.get_update(), budget, credits(meta.id, None))
                    )
                except Denied:
                    continue
        return self._signed(request, origin, {"objects": out})

    def app(self, max_body: int) -> web.Application:
        from .api import error_middleware

        @web.middleware
        async def sign_errors(request: web.Request, handler: Any) -> web.StreamResponse:
            # errors are signed (bound to the request's nonce) for a trusted origin, so that the peer can
            # tell our 4xx, which makes it drop what it sent, from anything else answering at our address
            resp = await error_middleware(request, handler)
            origin, nonce = request.headers.get(H_ORIGIN), request.headers.get(H_NONCE)
            if (
                resp.status >= 400
                and isinstance(resp, web.Response)
                and origin in self.peers
                and nonce
                and H_SIGNATURE not in resp.headers
            ):
                body = resp.body if isinstance(resp.body, bytes) else b""
                resp.headers.update(
                    sign_headers(
                        self.node.key, "RESPONSE", request.path_qs, self.node.domain, origin, body, nonce=nonce
                    )
                )
            return resp

        app = web.Application(client_max_size=max_body, middlewares=[sign_errors])
        app.router.add_post(PUSH_PATH, self.handle_push)
        app.router.add_post(SYNC_PATH, self.handle_sync)

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "domain": self.node.domain})

        app.router.add_get("/health", health)
        return app


class _TooLarge(aiohttp.ClientError):
    pass


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """event.wait() for at most timeout_s; True if the event was set. Not asyncio.wait_for: on Python
    3.11 a wait_for cancelled just as its event is set returns normally and the cancellation is lost
    (a node's stop then waited forever for that task; seen in CI)."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout_s)
    finally:
        waiter.cancel()
    return bool(done)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read a response body, failing as soon as it passes `limit` bytes (never holding more)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            resp.close()
            raise _TooLarge(f"response is over {limit} bytes (federation.max_response_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _sync_entry(
    meta: Any, update: bytes | None, budget: list[int], credits: list[ledger.Credit] | None = None
) -> dict[str, Any]:
    if update is not None:
        if len(update) > budget[0]:
            update = None  # over this answer's budget: the next round brings it
        else:
            budget[0] -= len(update)
    out = {
        "id": meta.id,
        "sv": base64.b64encode(meta.state_vector).decode(),
        "meta": meta.to_wire(),
        "update": base64.b64encode(update).decode() if update is not None else None,
    }
    if credits is not None:
        wire = [c.to_wire() for c in credits]
        size = len(json.dumps(wire))
        if size <= budget[0]:  # else the next round tries again (an object's credits travel whole)
            budget[0] -= size
            out["credits"] = wire
    return out


def _b64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{name} is not base64") from None


def _parse(model: type[_Model], body: bytes) -> Any:
    try:
        data = strict_json_loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "body is not JSON") from None
    try:
        return model.validate(data)
    except ValidationFailed as exc:
        loc = ".".join(str(x) for x in exc.loc) or "body"
        raise ApiError(422, f"{loc}: {exc.msg}") from None
