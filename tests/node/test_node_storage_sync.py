"""Storage: a write is visible once written, acknowledged once fsynced; a failed fsync stops the node.

The first test runs the storage in-process and watches the real sync calls (os.fsync and os.fdatasync
are wrapped, not replaced: every call still reaches the kernel). The second runs real node processes with the node's
test-fault hook P2PVALUE_TEST_FAIL_FSYNC (an update containing the mark gets an fsync that fails with
EIO after it was written).
"""

from __future__ import annotations

import asyncio
import http.client
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from p2pvalue_node.storage import CHECKPOINT_FRAMES, EXIT_DURABILITY_UNKNOWN, Storage, StorageFailed
from p2pvalue_node.testing import LocalNode, request, wait_until


def test_a_write_is_shown_after_its_commit_and_acknowledged_after_the_wal_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data" / "node.sqlite3"
    storage = Storage(path)
    wal = str(path) + "-wal"
    events: list[str] = []

    def spy(real: Any) -> Any:
        def sync(fd: int) -> None:
            real(fd)
            target = os.readlink(f"/proc/self/fd/{fd}")
            kind = "wal" if target == wal else "dir" if target == str(path.parent) else "other"
            events.append(f"fsync {kind}")

        return sync

    monkeypatch.setattr(os, "fsync", spy(os.fsync))
    monkeypatch.setattr(os, "fdatasync", spy(os.fdatasync))

    def insert(name: str) -> Any:
        def job(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO accounts (username, created_ms) VALUES (?, 0)", (name,))
            return name

        return job

    def written(result: str) -> None:
        # committed: the other connection already reads it; not yet fsynced
        seen = storage.read("SELECT username FROM accounts WHERE username = ?", (result,))
        events.append(f"written {result} visible={bool(seen)}")

    async def run() -> None:
        first = storage.submit(insert("alice"), on_written=written)
        first.add_done_callback(lambda _f: events.append("acknowledged alice"))
        assert await first == "alice"
        second = storage.submit(insert("bob"), on_written=written)
        second.add_done_callback(lambda _f: events.append("acknowledged bob"))
        await second
        # a refused write (primary key taken) is never shown and needs no fsync (the disk-full case, where
        # COMMIT itself fails, is test_node_storage_failure.py's, with a real node)
        refused: list[BaseException] = []
        with pytest.raises(StorageFailed):
            await storage.write(insert("bob"), on_refused=refused.append, on_written=written)
        assert len(refused) == 1

    try:
        asyncio.run(run())
    finally:
        storage.close()
    # on_written runs (in the loop) while the committer thread fsyncs: only the order against the
    # acknowledgement is fixed
    alice_ack, bob_ack = events.index("acknowledged alice"), events.index("acknowledged bob")
    assert events.index("written alice visible=True") < alice_ack < events.index("written bob visible=True"), events
    assert events.index("written bob visible=True") < bob_ack, events
    assert events.index("fsync dir") < alice_ack and events.count("fsync dir") == 1, events  # the new WAL's entry
    assert events[:alice_ack].count("fsync wal") == 1, events
    assert events[alice_ack:bob_ack].count("fsync wal") == 1, events
    assert len(events) == 7 and "fsync other" not in events, events  # nothing for the refused write


def _metric(n: LocalNode, name: str) -> float:
    for line in request(n.metrics_port, "GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is missing")


def _post_ops(n: LocalNode, user: str, oid: str, key: str, value: str) -> int | None:
    """The status of the answer, or None when the node closed the connection without one."""
    try:
        return n.req(
            "POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": key, "value": value}]}, user=user
        ).status
    except (OSError, http.client.HTTPException):
        return None


def _exited(n: LocalNode) -> int | None:
    assert n.proc is not None
    try:
        return n.proc.wait(timeout=20)
    except Exception:
        return None


def test_a_failed_fsync_stops_the_node_without_acknowledging(
    nodes_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = "fsync-fails-here"
    a, b = nodes_factory(2, start=False)
    a.start()
    monkeypatch.setenv("P2PVALUE_TEST_FAIL_FSYNC", mark)
    b.start()
    a.add_user("alice")
    bob = b.add_user("bob")
    oid = a.req("POST", "/api/objects", {"participants": [bob]}, user="alice").json()["id"]
    assert _post_ops(a, "alice", oid, "x", "1") == 200
    assert wait_until(lambda: b.req("GET", f"/api/objects/{oid}", user="bob").status == 200)
    assert wait_until(lambda: b.req("GET", f"/api/objects/{oid}", user="bob").json()["data"] == {"x": "1"})

    # a local client's update whose fsync fails: no 2xx, the node stops with its own exit status
    status = _post_ops(b, "bob", oid, "local", f"{mark} local")
    assert status is None or status >= 500, status
    assert _exited(b) == EXIT_DURABILITY_UNKNOWN
    log = (b.dir / "node.log").read_text()
    assert "node.sqlite3-wal failed (errno 5 EIO" in log, log[-2000:]
    b.proc = None
    # restarted, the node serves what is on disk: the earlier update, and the unacknowledged one too (its
    # WAL frames reached the kernel; only their fsync "failed"): the client, not told, may retry it
    b.start()
    assert b.req("GET", f"/api/objects/{oid}", user="bob").json()["data"] == {"x": "1", "local": f"{mark} local"}

    # a pushed update whose fsync fails on the receiver: the push is never answered 200, so it stays in
    # the origin's outbox and is delivered again once the receiver is back
    assert _post_ops(a, "alice", oid, "pushed", f"{mark} pushed") == 200
    assert _exited(b) == EXIT_DURABILITY_UNKNOWN
    b.proc = None
    assert _metric(a, "p2pvalue_outbox_depth") >= 1
    monkeypatch.delenv("P2PVALUE_TEST_FAIL_FSYNC")
    b.start()
    want = {"x": "1", "local": f"{mark} local", "pushed": f"{mark} pushed"}
    assert wait_until(lambda: b.req("GET", f"/api/objects/{oid}", user="bob").json()["data"] == want)
    assert wait_until(lambda: _metric(a, "p2pvalue_outbox_depth") == 0)
    assert a.req("GET", f"/api/objects/{oid}", user="alice").json()["data"] == want
    assert b.proc is not None and b.proc.poll() is None  # and it keeps running


def test_the_wal_is_checkpointed_by_the_committer_thread(tmp_path: Path) -> None:
    """SQLite's automatic checkpoint is off on the writer (it would run on the event loop): the committer
    thread checkpoints once the WAL holds CHECKPOINT_FRAMES frames, so the WAL is reused, not grown."""
    path = tmp_path / "node.sqlite3"
    storage = Storage(path)
    blob = os.urandom(16384)

    def frames() -> int:  # the wal-index header's mxFrame
        with open(str(path) + "-shm", "rb") as f:
            return int.from_bytes(f.read(20)[16:20], sys.byteorder)

    async def run() -> list[int]:
        seen = []
        for _round in range(4):
            jobs = [
                storage.submit(
                    lambda conn: conn.execute("INSERT INTO snapshots VALUES (hex(randomblob(16)), ?, 0)", (blob,))
                )
                for _ in range(100)
            ]
            await asyncio.gather(*jobs)
            seen.append(frames())
        return seen

    try:
        seen = asyncio.run(run())
        assert storage.read("SELECT COUNT(*) FROM snapshots") == [(400,)]
    finally:
        storage.close()
    # each round writes ~420 frames: the WAL passes CHECKPOINT_FRAMES in round 3 and starts over in round 4
    assert seen[2] >= CHECKPOINT_FRAMES > seen[3], seen
    assert path.stat().st_size >= 300 * len(blob)  # the first three rounds are in the database file
