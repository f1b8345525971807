"""Fuzz the HTTP API of a real node with hypothesis: whatever comes in, no 5xx and the node stays up."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from p2pvalue_node.testing import LocalNode, request

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
path_parts = st.one_of(st.text(max_size=6), st.integers(min_value=-2, max_value=5))
ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["set", "delete_key", "append", "insert_text", "delete_text", "bogus"])},
    optional={
        "path": st.lists(path_parts, max_size=3),
        "key": st.one_of(st.text(max_size=6), st.integers()),
        "value": json_values,
        "type": st.sampled_from(["value", "map", "list", "text", "x"]),
        "index": st.integers(min_value=-3, max_value=40),
        "text": st.text(max_size=10),
        "length": st.integers(min_value=-3, max_value=40),
    },
)

ROUTES = [
    "/health",
    "/api/objects",
    "/api/objects/{oid}",
    "/api/objects/{oid}/ops",
    "/api/objects/{oid}/update",
    "/api/objects/{oid}/state",
    "/api/contributions",
    "/api/contributions/totals",
    "/api/admin/accounts",
    "/api/whoami",
    "/api/ws",
    "/federation/v1/push",
    "/nope",
    "/api/objects/%00",
    "/api/objects/a/b/c",
]

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: Any) -> Any:
    from p2pvalue_node.testing import make_nodes

    (n,) = make_nodes(tmp_path_factory.mktemp("fuzz"), 1)
    n.start()
    try:
        n.add_user("alice")
        n.add_user("bob")
        oid = n.req("POST", "/api/objects", {"participants": [f"bob@{n.domain}"]}, user="alice").json()["id"]
        n.req(
            "POST",
            f"/api/objects/{oid}/ops",
            {
                "ops": [
                    {"op": "set", "key": "l", "type": "list"},
                    {"op": "set", "key": "t", "type": "text", "value": "abc"},
                    {"op": "set", "key": "m", "type": "map"},
                ]
            },
            user="alice",
        )
        yield n, oid
    finally:
        n.stop()


def _check(reply: Any) -> None:
    assert reply.status < 500, (reply.status, reply.body[:300])


@FUZZ
@given(ops=st.lists(ops, min_size=0, max_size=5))
def test_fuzz_json_ops(fuzz_node: tuple[LocalNode, str], ops: list[dict[str, Any]]) -> None:
    node, oid = fuzz_node
    r = node.req("POST", f"/api/objects/{oid}/ops", {"ops": ops}, user="alice")
    _check(r)
    assert r.status in (200, 400, 413, 422)
    # whatever happened, the object still reads
    assert node.req("GET", f"/api/objects/{oid}", user="bob").status == 200


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE"]),
    route=st.sampled_from(ROUTES),
    body=st.one_of(st.none(), json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)),
    auth=st.sampled_from([None, "alice", "bob", "junk", "admin"]),
    query=st.sampled_from(["", "?sv=AA%3D%3D", "?sv=%%%", "?object=x&contributor=y", "?token=junk"]),
)
def test_fuzz_routes(
    fuzz_node: tuple[LocalNode, str], method: str, route: str, body: bytes | None, auth: str | None, query: str
) -> None:
    node, oid = fuzz_node
    from p2pvalue_node.testing import ADMIN

    token = {"alice": node.tokens["alice"], "bob": node.tokens["bob"], "admin": ADMIN, "junk": "junk"}.get(auth or "")
    path = route.replace("{oid}", oid) + query
    port = node.fed_port if route.startswith("/federation") else node.client_port
    r = request(
        port,
        method,
        path,
        raw=body,
        token=token,
        headers={"Content-Type": "application/json"} if body is not None else None,
    )
    _check(r)
    if r.status >= 400:
        assert "error" in json.loads(r.body)


@FUZZ
@given(update=st.binary(min_size=1, max_size=64))
def test_fuzz_binary_updates(fuzz_node: tuple[LocalNode, str], update: bytes) -> None:
    node, oid = fuzz_node
    r = node.req(
        "POST",
        f"/api/objects/{oid}/update",
        user="alice",
        raw=update,
        headers={"Content-Type": "application/octet-stream"},
    )
    _check(r)
    assert node.req("GET", f"/api/objects/{oid}", user="alice").status == 200


@pytest.fixture(scope="module")
def fed_pair(tmp_path_factory: Any) -> Any:
    from p2pvalue_node.keys import load_key
    from p2pvalue_node.testing import make_nodes

    n0, n1 = make_nodes(tmp_path_factory.mktemp("fedfuzz"), 2)
    n0.start()
    try:
        n0.add_user("alice")
        oid = n0.req("POST", "/api/objects", {"participants": [f"bob@{n1.domain}"]}, user="alice").json()["id"]
        yield n0, n1, load_key(n1.dir / "signing.key"), oid
    finally:
        n0.stop()


b64 = st.binary(max_size=40).map(lambda b: __import__("base64").b64encode(b).decode())
wire_update = st.fixed_dictionaries(
    {
        "update": st.one_of(b64, st.text(max_size=8)),
        "origin_node": st.text(max_size=10),
        "origin_ts_ms": st.integers(),
        "author": st.one_of(st.none(), st.text(max_size=10)),
        "repair": st.booleans(),
    }
)


@FUZZ
@given(data=st.data())
def test_fuzz_signed_federation_bodies(fed_pair: Any, data: Any) -> None:
    """A trusted peer sending nonsense, correctly signed, still only gets 2xx/4xx answers."""
    from p2pvalue_node.signing import sign_headers

    n0, n1, key, oid = fed_pair
    object_id = data.draw(st.sampled_from([oid, "unknown-object", "../bad", ""]))
    meta = data.draw(
        st.one_of(
            st.none(),
            st.dictionaries(
                st.sampled_from(["creator", "participants", "version", "public", "created_ms"]), json_values, max_size=5
            ),
        )
    )
    push = {"items": [{"object_id": object_id, "meta": meta, "updates": data.draw(st.lists(wire_update, max_size=3))}]}
    sync = {"objects": [{"id": object_id, "sv": data.draw(b64), "meta": meta}]}
    body_obj = data.draw(st.sampled_from([push, sync, {"items": "x"}, {"objects": [1]}, []]))
    path = data.draw(st.sampled_from(["/federation/v1/push", "/federation/v1/sync"]))
    body = json.dumps(body_obj).encode()
    headers = sign_headers(key, "POST", path, n1.domain, n0.domain, body)
    r = request(n0.fed_port, "POST", path, raw=body, headers={**headers, "Content-Type": "application/json"})
    _check(r)
    assert r.status in (200, 400, 422), (r.status, r.body[:200])
