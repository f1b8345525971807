"""SQLite storage with WAL and group commit.

All writes go through one writer thread. Concurrent writers queue their jobs; the thread runs every
queued job inside a single transaction (each job in its own savepoint, so one bad job does not undo
the others), commits with synchronous=FULL and only then resolves the callers' futures. An awaited
`write()` therefore means "committed and fsynced": that is the point where the API acknowledges.
Reads use a second connection on the event loop thread; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

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
"""

Job = Callable[[sqlite3.Connection], Any]


def now_ms() -> int:
    return int(time.time() * 1000)


class StorageClosed(Exception):
    pass


class Storage:
    def __init__(self, path: Path, max_batch: int = 256) -> None:
        self.path = path
        self.max_batch = max_batch
        path.parent.mkdir(parents=True, exist_ok=True)
        init = self._connect()
        init.executescript(SCHEMA)
        init.close()
        self.reader = self._connect()
        self._queue: queue.SimpleQueue[tuple[Job, asyncio.Future[Any], asyncio.AbstractEventLoop] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=f"sqlite-writer:{path.name}", daemon=True)
        self._closed = False
        self.commits = 0
        self.jobs = 0
        self.on_commit: Callable[[int, float], None] | None = None  # (batch size, seconds), writer thread
        self._thread.start()
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, name=f"sqlite-checkpoint:{path.name}",
                                              daemon=True)
        self._checkpointer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so a committed (acknowledged) write survives
        # power loss as well as a killed process.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _checkpoints(self, interval_s: float = 0.5) -> None:
        """Copy the WAL back into the database beside the writer, not inside one of its commits.

        SQLite's automatic checkpoint would run (and fsync the database file) inside whichever commit
        crosses the threshold, stalling every write waiting on it; a passive checkpoint here never
        blocks the writer.
        """
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            while not self._stop_checkpoints.wait(interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass
        finally:
            conn.close()

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StorageClosed("storage is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((job, fut, loop))
        return await fut

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.reader.execute(sql, params).fetchall()

    def _run(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoints
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            started = time.perf_counter()
            try:
                results = self._commit_batch(conn, batch)
            except Exception:
                # one job failed (or the commit did): run each job in a transaction of its own so that
                # only the failing one is refused
                results = [self._commit_batch(conn, [item], single=True)[0] for item in batch]
            self.commits += 1
            self.jobs += len(batch)
            if self.on_commit is not None:
                self.on_commit(len(batch), time.perf_counter() - started)
            # one wake-up of the event loop per batch, not per job
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
            for (ok, value), (_job, fut, loop) in zip(results, batch):
                by_loop.setdefault(loop, []).append((fut, ok, value))
            for loop, settled in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle_all, settled)
                except RuntimeError:  # that loop is closed: nobody is waiting any more
                    pass
        conn.close()

    @staticmethod
    def _commit_batch(conn: sqlite3.Connection, batch: list[Any], single: bool = False) -> list[tuple[bool, Any]]:
        # no savepoint per job: every statement costs a GIL round trip against a busy event loop, and
        # jobs rarely fail
        results: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job, _fut, _loop in batch:
                results.append((True, job(conn)))
            conn.execute("COMMIT")
        except Exception as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if not single:
                raise
            return [(False, exc)]
        return results

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._stop_checkpoints.set()
        self._checkpointer.join(timeout=30)
        self.reader.close()


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in settled:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
