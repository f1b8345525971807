"""SQLite storage with WAL and group commit: visibility after the write, acknowledgement after the fsync.

Writers call `await storage.write(job, on_refused=..., on_written=...)`. Jobs that arrive while a commit
is in progress wait for the next one; each batch runs all its jobs' statements in one transaction on the
event loop thread (microseconds each), then, for the whole batch:

1. COMMIT, on the event loop, with `synchronous=NORMAL`: SQLite write(2)s the batch's WAL frames and
   returns without an fsync (about 0.1 ms for a small batch on the test machine). A refused write
   (ENOSPC, EFBIG, EIO on write) fails here, before anything is visible: the job's `on_refused` runs and
   its `on_written` never does (a refused write leaves no trace).
2. Each committed job's `on_written(result)` runs, at once, on the loop: what makes the change visible
   to others (the node's broadcast to WebSocket subscribers) happens now, without waiting for the disk
   and without a round trip through a thread.
3. After one turn of the loop (so that the WebSocket senders on_written woke write first), the WAL file
   is synced in a dedicated committer thread (fdatasync, as SQLite's own sync on Linux; the directory
   once, see below), so the event loop never waits on the disk; only then are the callers' futures
   resolved. An awaited
   `write()` therefore still means "committed and fsynced": that is where the API acknowledges a client
   and where a push is answered 200.

SQLite's automatic checkpoint would run inside COMMIT, i.e. on the event loop, with two fsyncs: it is
turned off on the writer connection, and the committer thread runs the same PASSIVE checkpoint after
its fsync once the WAL holds CHECKPOINT_FRAMES frames (SQLite's default of 1,000 pages), one batch at a
time as before. (A passive checkpointer running beside the writer was tried once: under constant writes
it never catches up and the WAL grows without bound; this one runs between batches, as SQLite's own
did.) How many frames the WAL holds is read from the wal-index header in the `-shm` file (mxFrame, see
https://sqlite.org/walformat.html); the WAL file itself keeps its size and is overwritten in place, so
its fdatasync flushes data only (no size change to journal), as with SQLite's own sync.

Why this is as durable as `synchronous=FULL` (https://sqlite.org/pragma.html#pragma_synchronous,
https://sqlite.org/wal.html): in WAL mode the two settings differ only in that FULL syncs the WAL at
every transaction commit and NORMAL does not; with both, the WAL is synced before each checkpoint, the
database file after each checkpoint, and the WAL header when the WAL is reused after a checkpoint. A
commit is its WAL frames (ending in a commit frame); fsyncing the WAL file after COMMIT makes exactly
those frames durable, as FULL's sync would have (the SQLite forum's advice for making NORMAL commits
durable is the same: flush the WAL file, https://sqlite.org/forum/forumpost/d1a6bc7c4cd2baca).
No later batch is written before this sync, so every acknowledged write is on disk. A checkpoint that
copies our frames before our fsync (another process on the same file) syncs them itself. SQLite's unix
VFS with FULL also fsyncs the directory when the WAL file is first synced after its creation; we do
that too, whenever the WAL file we sync is a new one.

A failed fsync after step 2 leaves the node unable to know what is durable (the kernel may have dropped
the dirty pages; a retry can report success without writing them: "fsyncgate"). The change may already
have been shown, so the node must not go on as if nothing happened: it logs at critical level (path and
errno) and exits at once with EXIT_DURABILITY_UNKNOWN, acknowledging nothing. Its supervisor restarts
it; the origin of a pushed update still holds it in its outbox (never answered 200), and the client got
no acknowledgement.

Reads use a second connection on the event loop thread; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar

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
OnWritten = Callable[[Any], None]  # called with the job's result
Pending = tuple[Job, "asyncio.Future[Any]", OnRefused | None, OnWritten | None]

# exit status of a node whose fsync failed after a change may have been shown (EX_IOERR)
EXIT_DURABILITY_UNKNOWN = 74
CHECKPOINT_FRAMES = 1000  # checkpoint once the WAL holds this many frames (SQLite's autocheckpoint default)
WAL_INDEX_MXFRAME_OFFSET = 16  # of the wal-index header's mxFrame (u32, native byte order) in the -shm file


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
        # one transaction, so a new data dir costs one commit for the whole schema instead of one per
        # statement (a deploy starts hundreds of nodes at once)
        self.writer.executescript(f"BEGIN;\n{SCHEMA}\nCOMMIT;")
        self.reader = self._connect()
        # checkpoints run in the committer thread, see the module doc
        self.writer.execute("PRAGMA wal_autocheckpoint=0")
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-commit:{path.name}")
        self._pending: list[Pending] = []
        self._wal_path = path.with_name(path.name + "-wal")
        self._wal_fd: int | None = None
        self._wal_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file _wal_fd is open on
        self._shm_fd: int | None = None  # the wal-index, opened with the WAL file
        self.fail_next_sync_for_test = False  # set by the node's P2PVALUE_TEST_FAIL_FSYNC hook only
        self._flushing = False
        self._closed = False
        self.commits = 0
        self.jobs = 0
        self.on_commit: Callable[[int, float], None] | None = None  # (jobs in the batch, seconds)
        self.on_failure: Callable[[], None] | None = None  # a job refused by a failed commit

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: COMMIT writes the WAL frames without fsyncing them; _sync_wal fsyncs them before any
        # write is acknowledged, so an acknowledged write survives power loss as with FULL (module doc).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def write(
        self,
        job: Callable[[sqlite3.Connection], T],
        on_refused: OnRefused | None = None,
        on_written: Callable[[T], None] | None = None,
    ) -> T:
        """Run `job` in a transaction and return its result once committed and fsynced.

        Once the commit is written (not yet fsynced), `on_written(result)` is called on the event loop:
        the place to make the change visible to others. If it cannot be committed, `on_written` is never
        called; `on_refused(exc)` is called at once, before any later job runs (so a caller can roll back
        in-memory state that later jobs would otherwise build on), and the awaited call raises:
        StorageFailed for a failed commit (sqlite3.Error), else the job's error."""
        return await self.submit(job, on_refused, on_written)

    def submit(
        self,
        job: Callable[[sqlite3.Connection], T],
        on_refused: OnRefused | None = None,
        on_written: Callable[[T], None] | None = None,
    ) -> asyncio.Future[T]:
        """Queue `job` now (it commits no later than any job queued after it) and return its future;
        see write()."""
        if self._closed:
            raise StorageClosed("storage is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((job, fut, on_refused, on_written))
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
                for (ok, value), (_job, fut, _refused, _written) in zip(results, batch, strict=True):
                    if fut.cancelled():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
        finally:
            self._flushing = False
            for _job, fut, _refused, _written in self._pending if self._closed else []:
                if not fut.done():
                    fut.set_exception(StorageClosed("storage is closed"))

    async def _commit_batch(self, loop: asyncio.AbstractEventLoop, batch: list[Pending]) -> list[tuple[bool, Any]]:
        """Run the batch's jobs in one transaction and COMMIT it (written, not fsynced), call the jobs'
        on_written, then fsync the WAL in the committer thread; return once fsynced (see the module doc)."""
        conn = self.writer
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for job, _fut, _refused, _written in batch:
                results.append((True, job(conn)))
            conn.execute("COMMIT")  # writes the WAL frames: a refused write raises here
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        for (_ok, value), (_job, _fut, _refused, written) in zip(results, batch, strict=True):
            if written is not None:
                try:
                    written(value)
                except Exception:
                    log.exception("making a committed write visible failed")
        # let the tasks on_written woke (WebSocket senders) write to their sockets before the committer
        # thread starts competing for the GIL
        await asyncio.sleep(0)
        await loop.run_in_executor(self._committer, self._sync_wal)
        return results

    def _sync_wal(self) -> None:
        """fsync the WAL file (in the committer thread; on failure stop the process, see the module doc),
        then checkpoint if the WAL has grown past CHECKPOINT_FRAMES frames.

        The WAL file is kept open (so the kernel keeps reporting a writeback error to this descriptor) and
        reopened when the path names another file (deleted and created again); a new WAL file's directory
        entry is made durable by an fsync of the directory."""
        try:
            if self.fail_next_sync_for_test:
                self.fail_next_sync_for_test = False
                raise OSError(errno.EIO, "fsync failure injected by P2PVALUE_TEST_FAIL_FSYNC")
            st = os.stat(self._wal_path)
            if self._wal_fd is None or self._wal_id != (st.st_dev, st.st_ino):
                self._close_wal()
                fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
                fst = os.fstat(fd)
                self._wal_fd, self._wal_id = fd, (fst.st_dev, fst.st_ino)
                self._shm_fd = os.open(self.path.with_name(self.path.name + "-shm"), os.O_RDONLY | os.O_CLOEXEC)
                dir_fd = os.open(self._wal_path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            # fdatasync, as SQLite's own sync on Linux: the frames and the file size, not the timestamps
            os.fdatasync(self._wal_fd)
        except OSError as exc:
            _durability_lost(self._wal_path, exc)
        assert self._shm_fd is not None
        frames = int.from_bytes(os.pread(self._shm_fd, 4, WAL_INDEX_MXFRAME_OFFSET), sys.byteorder)
        if frames >= CHECKPOINT_FRAMES:
            try:
                self.writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # as SQLite's automatic checkpoint: the WAL stays, a later one retries
                log.warning("checkpoint of %s failed: %s", self.path, exc)

    def _close_wal(self) -> None:
        for fd in (self._wal_fd, self._shm_fd):
            if fd is not None:
                os.close(fd)
        self._wal_fd = self._shm_fd = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._committer.shutdown(wait=True)
        self._close_wal()
        for _job, fut, _refused, _written in self._pending:
            if not fut.done():
                fut.set_exception(StorageClosed("storage is closed"))
        self._pending.clear()
        self.writer.close()
        self.reader.close()


def _durability_lost(path: Path, exc: OSError) -> NoReturn:
    """A written commit could not be fsynced: stop now, acknowledging nothing (see the module doc)."""
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    log.critical(
        "fsync of %s failed (errno %s %s: %s): what is durable is unknown; the node stops (exit %d) and must be "
        "restarted from what is on disk",
        path,
        exc.errno,
        code,
        exc.strerror,
        EXIT_DURABILITY_UNKNOWN,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_DURABILITY_UNKNOWN)
