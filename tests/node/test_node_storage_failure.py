"""Issue 10, high 5: a write the storage refuses (disk full) leaves no trace and answers 503.

The disk is made "full" for the real node process with RLIMIT_FSIZE (prlimit on its pid): SQLite's
writes past the limit fail with EFBIG (Python ignores SIGXFSZ), as they would on a full disk.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

from p2pvalue_node.testing import LocalNode, request


def _full_disk(node: LocalNode) -> None:
    assert node.proc is not None
    data = node.dir / "data"
    biggest = max(p.stat().st_size for p in data.iterdir())
    biggest = max(biggest, (node.dir / "node.log").stat().st_size)
    limit = biggest + 8192
    resource.prlimit(
        node.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY)
    )  # soft only: it can be lifted again


def _disk_ok(node: LocalNode) -> None:
    assert node.proc is not None
    resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _failures(node: LocalNode) -> float:
    text = request(node.metrics_port, "GET", "/metrics").body.decode()
    for line in text.splitlines():
        if line.startswith("p2pvalue_storage_failures_total "):
            return float(line.split()[1])
    raise AssertionError("p2pvalue_storage_failures_total is missing")


def test_refused_commit_leaves_no_trace(node: LocalNode, tmp_path: Path) -> None:
    oid = node.req("POST", "/api/objects", {"participants": [f"bob@{node.domain}"]}, user="alice").json()["id"]
    assert (
        node.req(
            "POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "x", "value": 1}]}, user="alice"
        ).status
        == 200
    )
    big = "z" * 300_000
    _full_disk(node)
    try:
        r = node.req(
            "POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "big", "value": big}]}, user="alice"
        )
        assert r.status == 503, (r.status, r.body[:300])  # the server's fault, not the client's (was 400)
        # the refused change is not visible to anyone
        assert node.req("GET", f"/api/objects/{oid}", user="bob").json()["data"] == {"x": 1}
        assert _failures(node) >= 1
    finally:
        _disk_ok(node)
    # a later update builds on what is stored, and survives a restart; the refused one never appears
    r = node.req("POST", f"/api/objects/{oid}/ops", {"ops": [{"op": "set", "key": "y", "value": 2}]}, user="alice")
    assert r.status == 200, r.body
    assert node.req("GET", f"/api/objects/{oid}", user="bob").json()["data"] == {"x": 1, "y": 2}
    node.stop()
    node.start()
    assert node.req("GET", f"/api/objects/{oid}", user="bob").json()["data"] == {"x": 1, "y": 2}


def test_refused_commit_of_a_binary_update_and_meta(node: LocalNode) -> None:
    import pycrdt

    oid = node.req("POST", "/api/objects", {}, user="alice").json()["id"]
    doc = pycrdt.Doc()
    doc.get("root", type=pycrdt.Map)["blob"] = "q" * 300_000
    _full_disk(node)
    try:
        r = node.req(
            "POST",
            f"/api/objects/{oid}/update",
            user="alice",
            raw=doc.get_update(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status == 503, (r.status, r.body[:300])
        view: Any = node.req("GET", f"/api/objects/{oid}", user="alice").json()
        assert view["data"] == {}
        r = node.req("PATCH", f"/api/objects/{oid}", {"add": [f"bob@{node.domain}"], "public": True}, user="alice")
        if r.status != 200:  # small enough to fit, or refused: either way memory matches the disk
            assert r.status == 503
            assert node.req("GET", f"/api/objects/{oid}", user="alice").json()["participants"] == [
                f"alice@{node.domain}"
            ]
    finally:
        _disk_ok(node)
    node.stop()
    node.start()
    assert node.req("GET", f"/api/objects/{oid}", user="alice").json()["data"] == {}
