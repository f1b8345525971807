"""The node: accounts, objects and their updates, wired to storage, federation and metrics.

This module holds the rules (who may read, write, manage; what gets pushed where); the HTTP layers
in api.py and federation.py translate requests into calls here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from . import ledger
from .config import NodeConfig
from .documents import (
    DocCache,
    LoadedDoc,
    ObjectMeta,
    ViewError,
    apply_ops,
    decode_state_vector,
    id_fits_creator,
    json_view,
    object_id_for,
    split_address,
    state_hash_of,
    valid_username,
)
from .keys import SigningKey, public_key_from_b64
from .metrics import NodeMetrics
from .storage import Storage, StorageFailed, now_ms
from .yupdate import MAX_NESTING, UpdateRejected, check_update, type_depth

log = logging.getLogger("p2pvalue.node")


class Denied(Exception):
    """The caller may not do this (403), or the thing does not exist for them (404)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class Invalid(ValueError):
    """Input that is well-formed JSON but not acceptable (400)."""


class RolledBack(StorageFailed):
    """A write refused because an earlier write it builds on (same document) could not be committed."""


class NotAnnounced(Denied):
    """A peer that is not the object's home pushed an object this node does not know yet: its home's
    announcement is still on the way (after a heal, or a participant just added), so the sender keeps
    the item and tries again later."""


class Unavailable(Denied):
    """The object exists but cannot be served: quarantined, or its content cannot be read (503)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 503)


# shared types may nest this deep under the root map: the root, 64 levels an op path can address,
# and the type an op creates there
MAX_TYPE_DEPTH = MAX_NESTING + 2


def _version(wire: dict[str, Any]) -> int:
    version = wire.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 1 << 62:
        raise Invalid("meta.version must be a non-negative integer")
    return version


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Applied:
    """The outcome of applying one update."""

    inserted: bool  # False when the exact update was already stored (a redelivery)
    changed: bool  # the state vector moved


@dataclass(eq=False)  # identity semantics: kept in sets
class Subscriber:
    """A live client connection: messages for it wait in a queue bounded in bytes.

    A subscriber whose queue would grow past `max_bytes` (a client that does not read) is dropped at
    once: its queue is emptied and `on_drop` is called (the WebSocket layer closes it with 1008),
    without waiting for a sender that may be blocked on the client's full socket."""

    user: str
    max_bytes: int = 4 << 20
    on_drop: Any = None
    queue: deque[str] = field(default_factory=deque)
    queued_bytes: int = 0
    dropped: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, msg: dict[str, Any]) -> None:
        self.offer_text(json.dumps(msg))

    def offer_text(self, text: str) -> None:
        if self.dropped:
            return
        if self.queued_bytes + len(text) > self.max_bytes:
            self.dropped = True
            self.queue.clear()
            self.queued_bytes = 0
            self.wake.set()
            if self.on_drop is not None:
                self.on_drop()
            return
        self.queue.append(text)
        self.queued_bytes += len(text)
        self.wake.set()

    def take(self) -> str | None:
        if not self.queue:
            return None
        text = self.queue.popleft()
        self.queued_bytes -= len(text)
        return text


class Node:
    def __init__(self, config: NodeConfig, key: SigningKey, metrics: NodeMetrics | None = None) -> None:
        self.config = config
        self.domain = config.domain
        self.key = key
        self.metrics = metrics or NodeMetrics(config.domain)
        self.admin_token = config.read_admin_token()
        self.storage = Storage(config.data_dir / "node.sqlite3")
        self.storage.on_commit = self.metrics.on_commit
        self.storage.on_failure = self.metrics.storage_failures.inc
        self.objects: dict[str, ObjectMeta] = {}
        self.docs = DocCache(limit=config.limits.max_loaded_documents)
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.data_dir_lock: Any = None  # held by server.start_node for the node's life
        self.quarantined: dict[str, str] = {}  # object id -> reason; such objects are not served
        self._tokens_stamp_path = config.data_dir / "tokens.changed"
        self._token_cache: dict[str, str] = {}  # token hash -> username, see authenticate
        self._token_cache_stamp: tuple[int, int] | None = None
        # who may sign ledger credits for users of a domain: that domain's node (this one, or a trusted peer)
        self.credit_keys = {p.domain: public_key_from_b64(p.public_key) for p in config.trusted_peers}
        self.credit_keys[self.domain] = key.private.verify_key
        # set by the federation layer: called with (peer domains) after an outbox insert committed
        self.on_outbox: Any = None
        # set by anti-entropy: called with (peer domains) when this node starts sharing an object with them
        self.on_shared: Any = None
        self._load()
        m = self.metrics
        m.objects.set_function(lambda: len(self.objects))
        m.objects_loaded.set_function(lambda: len(self.docs.docs))
        m.outbox_depth.set_function(self._outbox_depth)
        m.outbox_oldest_age.set_function(self._outbox_oldest_age)

    # -- loading -------------------------------------------------------------------------------
    def _load(self) -> None:
        for oid, reason in self.storage.read("SELECT object_id, reason FROM quarantine"):
            self.quarantined[oid] = reason
        for row in self.storage.read(
            "SELECT id, creator, public, participants, meta_version, created_ms, state_vector, state_hash FROM objects"
        ):
            oid, creator, public, parts, version, created, sv, sh = row
            self.objects[oid] = ObjectMeta(oid, creator, bool(public), json.loads(parts), version, created, sv, sh)

    def _outbox_depth(self) -> float:
        return float(self.storage.read("SELECT COUNT(*) FROM outbox")[0][0])

    def _outbox_oldest_age(self) -> float:
        oldest = self.storage.read("SELECT MIN(created_ms) FROM outbox")[0][0]
        return 0.0 if oldest is None else max(0.0, (now_ms() - oldest) / 1000.0)

    def close(self) -> None:
        self.storage.close()

    # -- accounts ------------------------------------------------------------------------------
    def is_admin(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.admin_token.encode())

    def authenticate(self, token: str) -> str | None:
        """Return the local address (alice@domain) of a client token.

        Tokens found in the database are kept in memory until the tokens change: every change
        (create_account, here or in `p2pvalue-node add-account` beside the running node) replaces the
        file `tokens.changed` in the data dir after its commit, and a change of that file's identity
        empties the cache. So a new token works at once and a replaced one stops at once, at the cost
        of one stat() per request instead of a database read."""
        stamp = self._tokens_stamp()
        if stamp != self._token_cache_stamp:
            self._token_cache.clear()
            self._token_cache_stamp = stamp
        h = token_hash(token)
        user = self._token_cache.get(h)
        if user is None:
            row = self.storage.read("SELECT username FROM tokens WHERE token_hash = ?", (h,))
            if not row:
                return None  # unknown tokens are not kept (their number is the caller's choice)
            if len(self._token_cache) >= 10_000:
                self._token_cache.clear()
            user = self._token_cache[h] = row[0][0]
        return f"{user}@{self.domain}"

    def _tokens_stamp(self) -> tuple[int, int]:
        try:
            st = os.stat(self._tokens_stamp_path)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def _tokens_changed(self) -> None:
        """Replace the stamp file (a new inode, so a running node sees the change even within one
        clock tick); called after a committed change of the tokens."""
        self._token_cache.clear()
        tmp = self._tokens_stamp_path.with_name(f".tokens.changed.{os.getpid()}")
        try:
            tmp.write_bytes(secrets.token_bytes(16))
            os.replace(tmp, self._tokens_stamp_path)
        except OSError as exc:
            raise StorageFailed(
                f"the token is stored, but {self._tokens_stamp_path} cannot be written: {exc}"
            ) from None

    async def create_account(self, username: str) -> str:
        """Create an account, or a new token for an existing one that replaces (revokes) its old tokens;
        return the token."""
        if not valid_username(username):
            raise Invalid("username: 1-64 characters of a-z, 0-9, '.', '_', '-' are allowed")
        token = secrets.token_urlsafe(32)
        h = token_hash(token)
        ts = now_ms()

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR IGNORE INTO accounts (username, created_ms) VALUES (?, ?)", (username, ts))
            conn.execute("DELETE FROM tokens WHERE username = ?", (username,))
            conn.execute("INSERT INTO tokens (token_hash, username, created_ms) VALUES (?, ?, ?)", (h, username, ts))

        await self.storage.write(job)
        self._tokens_changed()
        return token

    def accounts(self) -> list[str]:
        return [r[0] for r in self.storage.read("SELECT username FROM accounts ORDER BY username")]

    def account_exists(self, username: str) -> bool:
        return bool(self.storage.read("SELECT 1 FROM accounts WHERE username = ?", (username,)))

    # -- access control ------------------------------------------------------------------------
    def meta_for_read(self, user: str, object_id: str) -> ObjectMeta:
        meta = self.objects.get(object_id)
        if meta is None or not (meta.public or user in meta.participants):
            raise Denied("no such object, or you are not a participant", 404)
        return meta

    def meta_for_write(self, user: str, object_id: str) -> ObjectMeta:
        meta = self.meta_for_read(user, object_id)
        if user not in meta.participants:
            raise Denied("only participants may write this object")
        return meta

    def readable_objects(self, user: str) -> list[ObjectMeta]:
        return [m for m in self.objects.values() if user in m.participants or m.public]

    def _check_participants(self, participants: list[str]) -> list[str]:
        out: list[str] = []
        for p in participants:
            parts = split_address(p)
            if parts is None:
                raise Invalid(f"participant {p[:80]!r} is not a user@domain address")
            if parts[1] == self.domain and not self.account_exists(parts[0]):
                raise Invalid(f"participant {p} has no account on this node")
            if p not in out:
                out.append(p)
        if len(out) > self.config.limits.max_participants:
            raise Invalid(f"at most {self.config.limits.max_participants} participants are allowed")
        return out

    # -- objects -------------------------------------------------------------------------------
    async def create_object(
        self, creator: str, public: bool, participants: list[str], name: str | None = None
    ) -> ObjectMeta:
        """Create an object. Its id is node-chosen (random) or, when the creator proposes `name`, derived
        from (creator, name) by documents.object_id_for: a 409 then only ever concerns the creator's own
        object of that name (a retry), never another user's."""
        oid = object_id_for(creator, name) if name is not None else uuid.uuid4().hex
        if oid in self.objects:
            raise Denied(f"an object with id {oid} exists (your name {name!r}: a retry?)", 409)
        parts = self._check_participants([creator, *participants])
        meta = ObjectMeta(oid, creator, public, parts, 1, now_ms())
        self.objects[oid] = meta
        self.docs.put(oid, LoadedDoc(pycrdt.Doc()))
        peers = self._remote_domains(meta)

        def job(conn: sqlite3.Connection) -> None:
            self._save_meta(conn, meta)
            self._enqueue(conn, peers, oid, {"kind": "meta"})

        try:
            await self.storage.write(job)
        except Exception:
            self.objects.pop(oid, None)
            self.docs.docs.pop(oid, None)
            raise
        self._notify_outbox(peers)
        self._notify_shared(peers)
        return meta

    def _save_meta(self, conn: sqlite3.Connection, meta: ObjectMeta) -> None:
        conn.execute(
            "INSERT INTO objects (id, creator, public, participants, meta_version, created_ms, state_vector) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET public = excluded.public, "
            "participants = excluded.participants, meta_version = excluded.meta_version",
            (
                meta.id,
                meta.creator,
                int(meta.public),
                json.dumps(meta.participants),
                meta.version,
                meta.created_ms,
                meta.state_vector,
            ),
        )

    def _remote_domains(self, meta: ObjectMeta) -> list[str]:
        return sorted(d for d in meta.domains() if d != self.domain)

    def _enqueue(self, conn: sqlite3.Connection, peers: list[str], oid: str, payload: dict[str, Any]) -> None:
        if not peers:
            return
        text = json.dumps(payload)
        ts = now_ms()
        conn.executemany(
            "INSERT INTO outbox (peer, object_id, payload, created_ms) VALUES (?, ?, ?, ?)",
            [(p, oid, text, ts) for p in peers if self.config.peer(p) is not None],
        )

    def _notify_outbox(self, peers: list[str]) -> None:
        if peers and self.on_outbox is not None:
            self.on_outbox(peers)

    async def change_meta(
        self, user: str, object_id: str, public: bool | None, add: list[str], remove: list[str]
    ) -> ObjectMeta:
        meta = self.meta_for_read(user, object_id)
        if user != meta.creator:
            raise Denied("only the creator manages participants and the public flag")
        if meta.creator in remove:
            raise Invalid("the creator cannot be removed")
        new_parts = [p for p in meta.participants if p not in remove]
        new_parts = self._check_participants(new_parts + add)
        old_domains = set(self._remote_domains(meta))
        undo = (meta.participants, meta.public, meta.version)
        meta.participants = new_parts
        if public is not None:
            meta.public = public
        meta.version += 1
        new_domains = set(self._remote_domains(meta))
        # every domain that had or has a participant learns the new list; newly added domains also get
        # the whole document
        notify = sorted(old_domains | new_domains)
        added = sorted(new_domains - old_domains)
        full = self.load_doc(object_id).doc.get_update() if added else b""

        def job(conn: sqlite3.Connection) -> None:
            self._save_meta(conn, meta)
            self._enqueue(conn, notify, object_id, {"kind": "meta"})
            if added:
                self._enqueue(
                    conn,
                    added,
                    object_id,
                    {
                        "kind": "update",
                        "update": base64.b64encode(full).decode(),
                        "origin_node": self.domain,
                        "origin_ts_ms": now_ms(),
                        "author": None,
                        "repair": True,
                    },
                )

        try:
            await self.storage.write(job, on_written=lambda _: self._allowed_subscribers(object_id))
        except Exception:
            meta.participants, meta.public, meta.version = undo
            raise
        self._notify_outbox(notify)
        self._notify_shared(added)
        return meta

    def load_doc(self, object_id: str) -> LoadedDoc:
        """The object's document, loaded from storage if needed.

        Stored bytes are checked like incoming ones before pycrdt reads them: an object whose stored
        state fails (written by an older version, or by hand) is quarantined and the node goes on
        serving everything else. Raises Unavailable for a quarantined object."""
        ld = self.docs.get(object_id)
        if ld is not None:
            return ld
        if object_id in self.quarantined:
            raise Unavailable(f"object {object_id} is quarantined: {self.quarantined[object_id]}")
        doc: pycrdt.Doc = pycrdt.Doc()
        snap = self.storage.read("SELECT state FROM snapshots WHERE object_id = ?", (object_id,))
        rows = self.storage.read("SELECT seq, data FROM updates WHERE object_id = ? ORDER BY seq", (object_id,))
        stored = [("snapshot", snap[0][0])] if snap else []
        stored += [(f"update seq {seq}", data) for seq, data in rows]
        for what, data in stored:
            try:
                shape = check_update(data)
                doc.apply_update(data)
                if shape.nested_types and type_depth(doc, "root") > MAX_TYPE_DEPTH:
                    raise UpdateRejected(f"shared types nest deeper than {MAX_TYPE_DEPTH}")
            except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
                raise
            except BaseException as exc:  # pyo3 panics derive from BaseException
                self.quarantine(object_id, f"stored {what} cannot be loaded ({exc})")
                raise Unavailable(f"object {object_id} is quarantined: {self.quarantined[object_id]}") from None
        ld = LoadedDoc(doc, updates_since_snapshot=len(rows))
        self.docs.put(object_id, ld)
        return ld

    def quarantine(self, object_id: str, reason: str) -> None:
        """Stop serving an object (kept on disk untouched); persisted, so it stays so after a restart."""
        log.error("object %s quarantined: %s", object_id, reason)
        self.quarantined[object_id] = reason[:500]
        self.docs.docs.pop(object_id, None)
        ts = now_ms()
        task = asyncio.get_running_loop().create_task(
            self.storage.write(
                lambda conn: conn.execute(
                    "INSERT OR REPLACE INTO quarantine (object_id, reason, since_ms) VALUES (?, ?, ?)",
                    (object_id, reason[:500], ts),
                )
            )
        )
        task.add_done_callback(
            lambda t: (
                t.cancelled()
                or t.exception() is None
                or log.error("recording the quarantine of %s failed: %s", object_id, t.exception())
            )
        )

    def view(self, meta: ObjectMeta) -> dict[str, Any]:
        doc = self.load_doc(meta.id).doc
        try:
            data = json_view(doc)
        except ViewError as exc:
            raise Unavailable(f"object {meta.id}: {exc}") from None
        return {
            "id": meta.id,
            "creator": meta.creator,
            "public": meta.public,
            "participants": meta.participants,
            "version": meta.version,
            "data": data,
            "state_hash": state_hash_of(data),
            "state_vector": base64.b64encode(meta.state_vector).decode(),
        }

    def state_hash(self, object_id: str) -> str:
        try:
            return state_hash_of(json_view(self.load_doc(object_id).doc))
        except ViewError as exc:
            raise Unavailable(f"object {object_id}: {exc}") from None

    # -- updates -------------------------------------------------------------------------------
    async def apply_update(
        self,
        meta: ObjectMeta,
        update: bytes,
        author: str | None,
        origin_node: str,
        origin_ts_ms: int,
        *,
        local: bool,
        repair: bool = False,
        credits: list[ledger.Credit] | None = None,
    ) -> Applied:
        """Apply a Yjs update and return once it is durable, with `credits` (verified, see
        verified_credits) counted in the same transaction.

        Raises ValueError (UpdateRejected) for an update that is malformed or nests too deeply; it is
        checked before pycrdt sees it, and the document is then unchanged.
        """
        shape = check_update(update)
        ld = self.load_doc(meta.id)
        if shape.empty:
            if credits:
                await self.count_credits(credits)
            return Applied(False, False)  # nothing in it: not stored
        if shape.nested_types or shape.formats:
            # an item's parent may be inherited from a stored item: measure on a trial copy
            trial = pycrdt.Doc()
            trial.apply_update(ld.doc.get_update())
            trial.apply_update(update)
            if shape.nested_types and type_depth(trial, "root") > MAX_TYPE_DEPTH:
                raise UpdateRejected(f"shared types would nest deeper than {MAX_TYPE_DEPTH} levels")
            if shape.formats:
                _check_formats(trial, update)
        before = ld.doc.get_state()
        ld.doc.apply_update(update)  # raises ValueError before touching the document
        return await self._persist(
            meta,
            ld,
            before,
            update,
            author,
            origin_node,
            origin_ts_ms,
            local,
            repair,
            may_delete=shape.delete_ranges > 0,
            credits=credits or [],
        )

    async def apply_json_ops(self, meta: ObjectMeta, ops: list[dict[str, Any]], author: str) -> Applied:
        """Apply JSON operations as one update; on an op error the ops before it stay applied."""
        if _TEST_MARKS["DROP"] and _test_fault("DROP", json.dumps(ops).encode()):
            return Applied(False, False)  # acknowledged, never applied: a lost update, on purpose
        ld = self.load_doc(meta.id)
        before = ld.doc.get_state()
        error: Exception | None = None
        captured: list[bytes] = []
        # the transaction's own update (not a diff against the state vector, which would repeat every
        # past deletion)
        sub = ld.doc.observe(lambda event: captured.append(event.update))
        try:
            apply_ops(ld.doc, ops)
        except Exception as exc:  # OpError, or pycrdt refusing a value; persist what did apply
            error = exc
        finally:
            ld.doc.unobserve(sub)
        applied = Applied(False, False)
        update = pycrdt.merge_updates(*captured) if len(captured) > 1 else (captured[0] if captured else b"")
        if update and update != b"\x00\x00":
            applied = await self._persist(meta, ld, before, update, author, self.domain, now_ms(), True, False)
        if error is not None:
            raise error
        return applied

    async def _persist(
        self,
        meta: ObjectMeta,
        ld: LoadedDoc,
        before: bytes,
        update: bytes,
        author: str | None,
        origin_node: str,
        origin_ts_ms: int,
        local: bool,
        repair: bool,
        may_delete: bool = True,
        credits: list[ledger.Credit] | None = None,
    ) -> Applied:
        after = ld.doc.get_state()
        changed = after != before
        meta.state_vector = after
        local = local and not repair
        peers = self._remote_domains(meta) if local and not _test_fault("NO_FORWARD", update) else []
        digest = hashlib.sha256(update).digest()
        ts = now_ms()
        # this node credits the edits of its own users (remote edits are counted from the credits their
        # home node signed, see accept_credits): not an update that adds nothing (no new items and no
        # deletions), and not one counted before (ledger_seen outlives compaction)
        credit = (
            ledger.Credit(meta.id, digest, author, len(update), ts, b"")
            if local and author and (changed or may_delete)
            else None
        )
        if credit is not None and peers:
            credit = credit.signed_with(self.key)  # it leaves with the push; else signed when it first leaves
        ld.updates_since_snapshot += 1
        snapshot: bytes | None = None
        if ld.updates_since_snapshot >= self.config.storage.compact_every:
            # everything applied so far is either committed or queued before this job, so the
            # snapshot covers every stored update row of this object
            snapshot = ld.doc.get_update()
            ld.updates_since_snapshot = 0
        payload = {
            "kind": "update",
            "update": base64.b64encode(update).decode(),
            "origin_node": origin_node,
            "origin_ts_ms": origin_ts_ms,
            "author": author,
            "credits": [credit.to_wire()] if credit is not None else [],
        }

        fail_sync = _test_fault("FAIL_FSYNC", update)

        def job(conn: sqlite3.Connection) -> bool:
            if fail_sync:
                self.storage.fail_next_sync_for_test = True  # this job's commit: see _test_fault
            if ld.broken:
                raise RolledBack("an earlier write to this object could not be stored; not stored")
            cur = conn.execute(
                "INSERT OR IGNORE INTO updates (object_id, digest, data, origin_node, origin_ts_ms, author) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (meta.id, digest, update, origin_node, origin_ts_ms, author),
            )
            inserted = cur.rowcount == 1
            if credit is not None:
                ledger.count_credit(conn, credit, ts)
            for c in credits or []:
                ledger.count_credit(conn, c, min(c.at_ms, ts))  # a credit's time is its home node's
            conn.execute("UPDATE objects SET state_vector = ? WHERE id = ?", (after, meta.id))
            self._enqueue(conn, peers, meta.id, payload)
            if snapshot is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO snapshots (object_id, state, taken_ms) VALUES (?, ?, ?)",
                    (meta.id, snapshot, ts),
                )
                conn.execute("DELETE FROM updates WHERE object_id = ?", (meta.id,))
            return inserted

        def refused(exc: BaseException) -> None:
            # called before any later write runs: forget this document's in-memory state (it holds the
            # refused update, and later updates may build on it) so that it is loaded again from what
            # is committed; later writes of updates applied to it are refused too (ld.broken)
            ld.broken = True
            if self.docs.docs.get(meta.id) is ld:
                del self.docs.docs[meta.id]
            row = self.storage.read("SELECT state_vector FROM objects WHERE id = ?", (meta.id,))
            if row:
                meta.state_vector = row[0][0]
            log.error("object %s: an update could not be stored and was rolled back: %s", meta.id, exc)

        def written(inserted: bool) -> None:
            # shown once committed (written, before its fsync): a refused write is never shown
            if changed or inserted:
                self.broadcast(meta.id, update, origin_node, origin_ts_ms)

        ld.pending_writes += 1
        try:
            inserted = await self.storage.write(job, on_refused=refused, on_written=written)
        finally:
            ld.pending_writes -= 1
            self.docs.evict()
        origin = "local" if local else "remote"
        self.metrics.updates_applied.labels(origin=origin).inc()
        self.metrics.update_bytes.labels(origin=origin).inc(len(update))
        self._notify_outbox(peers)  # durable (fsynced) before it leaves the node
        return Applied(inserted, changed)

    def verified_credits(self, meta: ObjectMeta, wire: list[Any]) -> list[ledger.Credit]:
        """The ledger credits a peer handed over for `meta`'s object that may be counted here.

        A credit counts only when its author's home node signed it for this object (this node's key, or
        a trusted peer's), and only once (ledger_seen, when counted). Anything else is skipped: it is not
        this node's to count, and the edit it claims to credit may still be applied."""
        good: list[ledger.Credit] = []
        for data in wire:
            try:
                credit = ledger.Credit.from_wire(meta.id, data)
            except ValueError as exc:
                log.warning("object %s: a malformed credit is skipped: %s", meta.id, exc)
                continue
            parts = split_address(credit.author)
            key = self.credit_keys.get(parts[1]) if parts is not None else None
            if key is None or not credit.verify(key):
                log.warning(
                    "object %s: a credit for %r is not signed by its home node; skipped", meta.id, credit.author[:80]
                )
                continue
            good.append(credit)
        return good

    def signed_credits(self, object_id: str) -> list[ledger.Credit]:
        """The object's counted credits, ready to hand to a peer: this node's own credits that were
        stored unsigned (edits made while no other node held the object) are signed now, and their
        signatures stored so that it happens once."""
        credits = ledger.credits_of(self.storage, object_id)
        fresh = [c.signed_with(self.key) for c in credits if not c.sig]
        if not fresh:
            return credits
        signed = {c.digest: c for c in fresh}

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE ledger_credits SET sig = ? WHERE object_id = ? AND digest = ? AND sig = x''",
                [(c.sig, c.object_id, c.digest) for c in fresh],
            )

        self.storage.submit(job).add_done_callback(
            lambda f: (
                f.cancelled()
                or f.exception() is None
                or log.warning("object %s: storing credit signatures failed: %s", object_id, f.exception())
            )
        )
        return [signed.get(c.digest, c) for c in credits]

    async def count_credits(self, credits: list[ledger.Credit]) -> int:
        """Count verified credits (see verified_credits) in a write of their own; return how many were new."""

        def job(conn: sqlite3.Connection) -> int:
            now = now_ms()  # a credit's time is its home node's; never later than now here
            return sum(ledger.count_credit(conn, c, min(c.at_ms, now)) for c in credits)

        return await self.storage.write(job) if credits else 0

    # -- live updates --------------------------------------------------------------------------
    def subscribe(self, object_id: str, sub: Subscriber) -> None:
        self.subscribers.setdefault(object_id, set()).add(sub)

    def unsubscribe(self, object_id: str, sub: Subscriber) -> None:
        subs = self.subscribers.get(object_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subscribers[object_id]

    def broadcast(self, object_id: str, update: bytes, origin_node: str, origin_ts_ms: int) -> None:
        subs = self._allowed_subscribers(object_id)
        if not subs:
            return
        text = json.dumps(
            {
                "type": "update",
                "object": object_id,
                "update": base64.b64encode(update).decode(),
                "origin_node": origin_node,
                "origin_ts_ms": origin_ts_ms,
            }
        )
        for sub in list(subs):
            sub.offer_text(text)

    def _allowed_subscribers(self, object_id: str) -> set[Subscriber]:
        """The object's subscribers, after dropping those who may no longer read it (removed from the
        participants, or the object made private); each dropped one is told so."""
        subs = self.subscribers.get(object_id)
        if not subs:
            return set()
        meta = self.objects.get(object_id)
        for sub in list(subs):
            if meta is None or not (meta.public or sub.user in meta.participants):
                subs.discard(sub)
                sub.offer({"type": "unsubscribed", "object": object_id, "reason": "you may no longer read this object"})
        if not subs:
            del self.subscribers[object_id]
        return subs

    # -- federation entry points ---------------------------------------------------------------
    async def accept_remote_meta(self, origin: str, object_id: str, wire: dict[str, Any] | None) -> ObjectMeta:
        """Return the object's meta for a request from `origin`, creating or updating it from `wire`.

        An unknown object is accepted when its claimed participants include a user of the origin and a
        user of this node. Changes to a known object's participants are only taken from the creator's
        node, with a higher version.
        """
        meta = self.objects.get(object_id)
        if meta is None:
            if wire is None:
                raise Denied("unknown object and no metadata", 404)
            new = self._meta_from_wire(object_id, wire)
            if not id_fits_creator(object_id, new.creator):
                # a derived id (NAME.HASH) names its creator: no node can announce an object in another
                # creator's namespace
                raise Denied(f"object id {object_id} is derived for another creator than {new.creator}")
            if new.home != origin:
                # objects are announced by their home node only: a peer cannot create one in the name of
                # a user of this node or of a third node
                raise NotAnnounced(
                    f"object {object_id} is not known here yet; only the creator's node ({new.home}) can announce it"
                )
            if not new.has_participant_at(self.domain):
                raise Denied("this node has no participant in this object")
            self._check_local_participants(new.participants)
            self.objects[object_id] = new
            self.docs.put(object_id, LoadedDoc(pycrdt.Doc()))
            try:
                await self.storage.write(lambda conn: self._save_meta(conn, new))
            except Exception:
                self.objects.pop(object_id, None)
                self.docs.docs.pop(object_id, None)
                raise
            self._notify_shared(self._remote_domains(new))
            return new
        if wire is not None and wire.get("creator") != meta.creator:
            # the same id, another object (created elsewhere while the nodes could not talk): never mix them
            raise Denied(f"object id {object_id} is taken here by another object (creator {meta.creator})", 409)
        if wire is not None and origin == meta.home and _version(wire) > meta.version:
            new = self._meta_from_wire(object_id, wire)
            self._check_local_participants(new.participants)
            if new.creator == meta.creator:
                undo = (meta.participants, meta.public, meta.version)
                meta.participants, meta.public, meta.version = new.participants, new.public, new.version
                try:
                    await self.storage.write(
                        lambda conn: self._save_meta(conn, meta),
                        on_written=lambda _: self._allowed_subscribers(object_id),
                    )
                except Exception:
                    meta.participants, meta.public, meta.version = undo
                    raise
        if not meta.has_participant_at(origin):
            raise Denied("the origin has no participant in this object")
        return meta

    def _check_local_participants(self, participants: list[str]) -> None:
        for p in participants:
            parts = split_address(p)
            if parts is not None and parts[1] == self.domain and not self.account_exists(parts[0]):
                raise Invalid(f"participant {p} has no account on this node")

    def _meta_from_wire(self, object_id: str, wire: dict[str, Any]) -> ObjectMeta:
        creator = wire.get("creator")
        parts = wire.get("participants")
        if not isinstance(creator, str) or split_address(creator) is None:
            raise Invalid("meta.creator must be a user@domain address")
        if not isinstance(parts, list) or not all(isinstance(p, str) and split_address(p) for p in parts):
            raise Invalid("meta.participants must be a list of user@domain addresses")
        if len(parts) > self.config.limits.max_participants:
            raise Invalid("too many participants")
        if creator not in parts:
            raise Invalid("meta.creator must be a participant")
        version = _version({"version": wire.get("version", 1)})
        created = wire.get("created_ms", 0)
        if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created < 1 << 62:
            raise Invalid("meta.created_ms must be a non-negative integer")
        return ObjectMeta(
            object_id, creator, bool(wire.get("public", False)), list(dict.fromkeys(parts)), version, created
        )

    def shares_with(self, domain: str) -> bool:
        return any(m.has_participant_at(domain) for m in self.objects.values() if m.id not in self.quarantined)

    def _notify_shared(self, domains: list[str]) -> None:
        if domains and self.on_shared is not None:
            self.on_shared(domains)

    def shared_with(self, domain: str) -> list[ObjectMeta]:
        return [m for m in self.objects.values() if m.has_participant_at(domain) and m.id not in self.quarantined]


def _check_formats(trial: pycrdt.Doc, update: bytes) -> None:
    """Refuse an update with format items unless the trial copy it was applied to reads back.

    pycrdt lists a format item placed in a map (directly, or after a map entry it names as its
    origin) as a key that it then cannot look up, so the object's view would fail for good. Such an
    item must be fully integrated here (not left pending until the items it refers to arrive, when no
    check would see it) and the document must still read as JSON."""
    have = decode_state_vector(trial.get_state())
    if any(have.get(client, 0) < clock for client, clock in decode_state_vector(pycrdt.get_state(update)).items()):
        raise UpdateRejected("format items that refer to content this node does not have yet")
    try:
        json_view(trial)
    except ViewError as exc:
        raise UpdateRejected(f"the update would make the object unreadable: {exc}") from None


def _test_fault(name: str, data: bytes) -> bool:
    """Faults injected on purpose, for tests only: with the environment variable
    P2PVALUE_TEST_DROP=MARK a node acknowledges JSON ops containing MARK without applying them; with
    P2PVALUE_TEST_NO_FORWARD=MARK it applies a local update containing MARK but never sends it to peers
    (only anti-entropy can repair that); both are for the toolkit's accounting tests. With
    P2PVALUE_TEST_FAIL_FSYNC=MARK the fsync after the commit of an update (local or pushed) containing
    MARK fails as a disk would (EIO), after the update was written and shown (see storage.py)."""
    mark = _TEST_MARKS[name]
    return bool(mark) and mark in data


# read once at start (not per update)
_TEST_MARKS = {
    name: os.environ.get(f"P2PVALUE_TEST_{name}", "").encode() for name in ("DROP", "NO_FORWARD", "FAIL_FSYNC")
}
