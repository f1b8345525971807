"""Signed server-to-server requests against a real node: forged, tampered, stale and replayed requests
are rejected; a correctly signed one is accepted and answered with a signed response."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import pycrdt
import pytest
from multidict import CIMultiDict
from p2pvalue_node.keys import generate, load_key
from p2pvalue_node.ledger import Credit
from p2pvalue_node.signing import SignatureRejected, Verifier, sign_headers
from p2pvalue_node.testing import HOST, LocalNode, request

PUSH = "/federation/v1/push"


def _post(target: LocalNode, headers: dict[str, str], body: bytes, path: str = PUSH) -> Any:
    return request(target.fed_port, "POST", path, raw=body, headers={**headers, "Content-Type": "application/json"})


@pytest.fixture
def pair(nodes_factory: Any) -> tuple[LocalNode, LocalNode]:
    # only n0 runs; the test speaks for n1 with n1's real key
    n0, n1 = nodes_factory(2, start=False)
    n0.start()
    n0.add_user("alice")
    return n0, n1


def test_signature_checks(pair: tuple[LocalNode, LocalNode]) -> None:
    n0, n1 = pair
    key = load_key(n1.dir / "signing.key")
    body = json.dumps({"items": []}).encode()

    def signed(**kw: Any) -> dict[str, str]:
        return sign_headers(
            kw.pop("key", key),
            "POST",
            kw.pop("path", PUSH),
            kw.pop("origin", n1.domain),
            kw.pop("dest", n0.domain),
            kw.pop("body", body),
            **kw,
        )

    good = signed()
    ok = _post(n0, good, body)
    assert ok.status == 200, ok.body
    # the response is signed by n0 and bound to our nonce
    Verifier(n1.domain, {n0.domain: n0.public_key}).verify_response(
        PUSH, CIMultiDict(ok.headers), ok.body, n0.domain, good["X-P2P-Nonce"]
    )

    rejected = {
        "unsigned": _post(n0, {}, body),
        "replayed": _post(n0, good, body),
        "wrong key": _post(n0, signed(key=generate()), body),
        "unknown origin": _post(n0, signed(origin="stranger.test"), body),
        "wrong destination": _post(n0, signed(dest="elsewhere.test"), body),
        "tampered body": _post(n0, signed(), json.dumps({"items": [], "x": 1}).encode()),
        "other path": _post(n0, signed(path="/federation/v1/sync"), body),
        "stale": _post(n0, signed(now_ms=int((time.time() - 600) * 1000)), body),
        "future": _post(n0, signed(now_ms=int((time.time() + 600) * 1000)), body),
        "garbage signature": _post(n0, {**signed(), "X-P2P-Signature": "%%%"}, body),
    }
    for what, reply in rejected.items():
        assert reply.status in (401, 403), (what, reply.status, reply.body)
        assert "error" in reply.json(), what
    assert rejected["stale"].json()["error"] == "stale timestamp"
    assert rejected["replayed"].json()["error"] == "replayed request"
    metrics = request(n0.metrics_port, "GET", "/metrics").body.decode()
    assert 'p2pvalue_federation_requests_rejected_total{reason="replayed"} 1.0' in metrics


def test_remote_may_only_write_objects_with_its_participants(pair: tuple[LocalNode, LocalNode]) -> None:
    n0, n1 = pair
    key = load_key(n1.dir / "signing.key")
    private = n0.req("POST", "/api/objects", {}, user="alice").json()["id"]
    shared = n0.req("POST", "/api/objects", {"participants": [f"bob@{n1.domain}"]}, user="alice").json()["id"]
    doc = pycrdt.Doc()
    doc.get("root", type=pycrdt.Map)["by"] = "n1"
    upd = {
        "update": base64.b64encode(doc.get_update()).decode(),
        "origin_node": n1.domain,
        "origin_ts_ms": int(time.time() * 1000),
        "author": f"bob@{n1.domain}",
    }

    def push(items: list[dict[str, Any]]) -> Any:
        body = json.dumps({"items": items}).encode()
        r = _post(n0, sign_headers(key, "POST", PUSH, n1.domain, n0.domain, body), body)
        assert r.status == 200, r.body
        return r.json()["results"]

    # claiming a participant in metadata does not change a known object's participants
    forged_meta = {
        "creator": f"alice@{n0.domain}",
        "participants": [f"alice@{n0.domain}", f"bob@{n1.domain}"],
        "version": 99,
        "public": True,
    }
    raw = doc.get_update()
    credit = Credit.signed(
        key, shared, hashlib.sha256(raw).digest(), f"bob@{n1.domain}", len(raw), int(time.time() * 1000)
    )
    bob_edit = {"object_id": shared, "updates": [upd], "credits": [credit.to_wire()]}
    res = push([{"object_id": private, "meta": forged_meta, "updates": [upd]}, bob_edit])
    assert res[0]["ok"] is False and "no participant" in res[0]["error"]
    assert res[1]["ok"] is True
    assert n0.req("GET", f"/api/objects/{private}", user="alice").json()["data"] == {}
    assert n0.req("GET", f"/api/objects/{shared}", user="alice").json()["data"] == {"by": "n1"}
    # an unknown object without a participant here is refused too
    res = push(
        [
            {
                "object_id": "made-up",
                "meta": {"creator": f"bob@{n1.domain}", "participants": [f"bob@{n1.domain}"]},
                "updates": [upd],
            }
        ]
    )
    assert res[0]["ok"] is False
    # an invalid Yjs update in a signed push is a per-item error, not a crash
    res = push([{"object_id": shared, "updates": [dict(upd, update=base64.b64encode(b"\xff\x01").decode())]}])
    assert res[0]["ok"] is False
    # redelivery is idempotent: applied once, counted once in the ledger
    push([bob_edit])
    rows = n0.req("GET", f"/api/contributions?contributor=bob@{n1.domain}", user="alice").json()["contributions"]
    assert [r["edits"] for r in rows] == [1]
    # no relaying: a pushed update must originate at the sender; a peer cannot credit other domains' users
    doc.get("root", type=pycrdt.Map)["more"] = 1
    relayed = dict(upd, update=base64.b64encode(doc.get_update()).decode(), origin_node="n9.test")
    assert push([{"object_id": shared, "updates": [relayed]}])[0]["ok"] is False
    forged = dict(upd, update=base64.b64encode(doc.get_update()).decode(), author=f"alice@{n0.domain}")
    assert push([{"object_id": shared, "updates": [forged]}])[0]["ok"] is True
    assert n0.req("GET", f"/api/objects/{shared}", user="alice").json()["data"] == {"by": "n1", "more": 1}
    credited = n0.req("GET", f"/api/contributions?contributor=alice@{n0.domain}", user="alice").json()
    assert credited["contributions"] == []
    # malformed signed bodies get a 4xx
    for body in (b"not json", b'{"items": "x"}', b'{"items": [{"object_id": "../x"}]}'):
        r = _post(n0, sign_headers(key, "POST", PUSH, n1.domain, n0.domain, body), body)
        assert 400 <= r.status < 500, (body, r.status)


def test_verifier_unit() -> None:
    me, peer = generate(), generate()
    v = Verifier("me.test", {"peer.test": peer.public_b64}, max_skew_s=300)
    h = sign_headers(peer, "POST", "/p", "peer.test", "me.test", b"{}", now_ms=1_000_000)
    assert v.verify("POST", "/p", h, b"{}", now=1000.0 + 299) == "peer.test"
    with pytest.raises(SignatureRejected, match="replayed"):
        v.verify("POST", "/p", h, b"{}", now=1000.0)
    h2 = sign_headers(peer, "POST", "/p", "peer.test", "me.test", b"{}", now_ms=1_000_000)
    with pytest.raises(SignatureRejected, match="stale"):
        v.verify("POST", "/p", h2, b"{}", now=1000.0 + 301)
    with pytest.raises(SignatureRejected, match="bad signature"):
        v.verify("GET", "/p", h2, b"{}", now=1000.0)
    with pytest.raises(SignatureRejected, match="unknown origin"):
        v.verify("POST", "/p", sign_headers(me, "POST", "/p", "me2.test", "me.test", b""), b"")
    assert HOST == "127.0.0.1"


def test_key_file_and_signatures_match_rfc8032(tmp_path: Any) -> None:
    """The key file format and the signatures on the wire do not depend on the ed25519 library: a key
    file holding the RFC 8032 test-1 seed yields that test's public key and signature."""
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    signature = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
        "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    path = tmp_path / "signing.key"
    path.write_text("ed25519 " + base64.b64encode(seed).decode() + "\n")
    key = load_key(path)
    assert key.public_b64 == base64.b64encode(public).decode()
    assert key.sign(b"") == signature


def test_malformed_signature_is_rejected_not_an_error() -> None:
    key = generate()
    v = Verifier("n0.test", {"n1.test": key.public_b64})
    headers = sign_headers(key, "POST", PUSH, "n1.test", "n0.test", b"{}")
    for bad in (b"", b"x" * 10, b"x" * 63, b"x" * 65, b"x" * 64):
        forged = {**headers, "X-P2P-Signature": base64.b64encode(bad).decode()}
        with pytest.raises(SignatureRejected):
            v.verify("POST", PUSH, forged, b"{}")
    assert v.verify("POST", PUSH, headers, b"{}") == "n1.test"
