"""SQLite storage with WAL and group commit.

Writers call `await storage.write(job)`. Jobs that arrive while a commit is in progress wait for the
next one; each batch runs all its jobs' statements in one transaction on the event loop thread
(microseconds each), then COMMITs in a dedicated thread, so the fsync never blocks the event loop,
and only then resolves the callers' futures. With `synchronous=FULL` an awaited `write()` therefore
means "committed and fsynced": that is the point where the API acknowledges.
Reads use a second connection on the event loop thread; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("p2pvalue.storage")

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES accounts(username),
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY,
    creator TEXT NOT NULL,
    public INTEGER NOT NULL DEFAULT 0,
    participants TEXT NOT NULL,
    meta_version INTEGER NOT NULL DEFAULT 1,
    created_ms INTEGER NOT NULL,
    state_vector BLOB NOT NULL DEFAULT x'00',
    state_hash TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS snapshots (
    object_id TEXT PRIMARY KEY,
    state BLOB NOT NULL,
    taken_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id TEXT NOT NULL,
    digest BLOB NOT NULL,
    data BLOB NOT NULL,
    origin_node TEXT NOT NULL,
    origin_ts_ms INTEGER NOT NULL,
    author TEXT,
    UNIQUE (object_id, digest)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    object_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_peer ON outbox(peer, id);
CREATE TABLE IF NOT EXISTS ledger (
    contributor TEXT NOT NULL,
    object_id TEXT NOT NULL,
    edits INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (contributor, object_id)
);
CREATE TABLE IF NOT EXISTS ledger_seen (
    object_id TEXT NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (object_id, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_credits (
    object_id TEXT NOT NULL,
    digest BLOB NOT NULL,
    author TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    sig BLOB NOT NULL,
    PRIMARY KEY (object_id, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_summaries (
    object_id TEXT PRIMARY KEY,
    n INTEGER NOT NULL,
    x INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    ident INTEGER PRIMARY KEY,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces(expires_ms);
CREATE TABLE IF NOT EXISTS quarantine (
    object_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since_ms INTEGER NOT NULL
);
"""

Job = Callable[[sqlite3.Connection], Any]
OnRefused = Callable[[BaseException], None]


def now_ms() -> int:
    return int(time.time() * 1000)


class StorageClosed(Exception):
    pass


class StorageFailed(Exception):
    """A write the storage could not commit (disk full, I/O error): the server's fault, answered 503."""


class Storage:
    def __init__(self, path: Path, max_batch: int = 512) -> None:
        self.path = path
        self.max_batch = max_batch
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = self._connect()
        # one transaction, so a new data dir costs one fsync for the whole schema instead of one per
        # statement (a deploy starts hundreds of nodes at once)
        self.writer.executescript(f"BEGIN;\n{SCHEMA}\nCOMMIT;")
        self.reader = self._connect()
        # SQLite's automatic checkpoint (every 1000 WAL pages) runs inside a COMMIT, i.e. in the commit
        # thread, so it delays the next batch but never the event loop. (A passive checkpointer beside the
        # writer was tried: under constant writes it never catches up and the WAL grows without bound.)
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-commit:{path.name}")
        self._pending: list[tuple[Job, asyncio.Future[Any], OnRefused | None]] = []
        self._flushing = False
        self._closed = False
        self.commits = 0
        self.jobs = 0
        self.on_commit: Callable[[int, float], None] | None = None  # (jobs in the batch, seconds)
        self.on_failure: Callable[[], None] | None = None  # a job refused by a failed commit

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so a committed (acknowledged) write survives
        # power loss as well as a killed process.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def write(self, job: Callable[[sqlite3.Connection], T], on_refused: OnRefused | None = None) -> T:
        """Run `job` in a transaction and return its result once committed.

        If it cannot be committed, `on_refused(exc)` is called at once, before any later job runs (so
        a caller can roll back in-memory state that later jobs would otherwise build on), and the
        awaited call raises: StorageFailed for a failed commit (sqlite3.Error), else the job's error."""
        return await self.submit(job, on_refused)

    def submit(self, job: Callable[[sqlite3.Connection], T], on_refused: OnRefused | None = None) -> asyncio.Future[T]:
        """Queue `job` now (it commits no later than any job queued after it) and return its future;
        see write()."""
        if self._closed:
            raise StorageClosed("storage is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((job, fut, on_refused))
        if not self._flushing:
            self._flushing = True
            loop.create_task(self._flush())
        return fut

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.reader.execute(sql, params).fetchall()

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending and not self._closed:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                started = time.perf_counter()
                try:
                    results = await self._commit_batch(loop, batch)
                except Exception:
                    # one job failed (or the commit did): run each in a transaction of its own so that
                    # only the failing one is refused
                    results = []
                    for item in batch:
                        try:
                            results.extend(await self._commit_batch(loop, [item]))
                        except Exception as exc:
                            if isinstance(exc, sqlite3.Error):
                                failure = StorageFailed(f"storage write failed: {exc}")
                                failure.__cause__ = exc
                                exc = failure
                                if self.on_failure is not None:
                                    self.on_failure()
                            if item[2] is not None:
                                try:
                                    item[2](exc)
                                except Exception:
                                    log.exception("rolling back after a refused write failed")
                            results.append((False, exc))
                self.commits += 1
                self.jobs += len(batch)
                if self.on_commit is not None:
                    self.on_commit(len(batch), time.perf_counter() - started)
                for (ok, value), (_job, fut, _cb) in zip(results, batch, strict=True):
                    if fut.cancelled():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        finally:
            self._flushing = False
            for _job, fut, _cb in self._pending if self._closed else []:
                if not fut.done():
                    fut.set_exception(StorageClosed("storage is closed"))

    async def _commit_batch(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Job, asyncio.Future[Any], OnRefused | None]]
    ) -> list[tuple[bool, Any]]:
        conn = self.writer
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for job, _fut, _cb in batch:
                results.append((True, job(conn)))
            # the fsync happens here, off the event loop; the GIL is released while SQLite waits
            await loop.run_in_executor(self._committer, conn.execute, "COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    await loop.run_in_executor(self._committer, conn.execute, "ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        return results

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._committer.shutdown(wait=True)
        for _job, fut, _cb in self._pending:
            if not fut.done():
                fut.set_exception(StorageClosed("storage is closed"))
        self._pending.clear()
        self.writer.close()
        self.reader.close()
