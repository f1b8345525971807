"""Issue 10, medium and low items: subscriptions rechecked (8), bad meta.version (14), WebSocket ops
bounded (16), NaN/Infinity refused (17), operator edges (19), no existence oracle and token replacement
(20)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from p2pvalue_node.config import ConfigError, parse_config_text
from p2pvalue_node.signing import sign_headers
from p2pvalue_node.testing import ADMIN, HOST, LocalNode, request


def _ws_url(node: LocalNode) -> str:
    return f"http://{HOST}:{node.client_port}/api/ws"


def test_removed_participant_stops_receiving_live_updates(node: LocalNode) -> None:
    oid = node.req("POST", "/api/objects", {"participants": [f"bob@{node.domain}"]}, user="alice").json()["id"]

    async def run() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(_ws_url(node), headers={"Authorization": f"Bearer {node.tokens['bob']}"}) as ws,
        ):
            await ws.send_json({"type": "subscribe", "object": oid})
            assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
            r = await s.patch(
                f"http://{HOST}:{node.client_port}/api/objects/{oid}",
                headers={"Authorization": f"Bearer {node.tokens['alice']}"},
                json={"remove": [f"bob@{node.domain}"]},
            )
            assert r.status == 200
            r = await s.post(
                f"http://{HOST}:{node.client_port}/api/objects/{oid}/ops",
                headers={"Authorization": f"Bearer {node.tokens['alice']}"},
                json={"ops": [{"op": "set", "key": "secret", "value": "after removal"}]},
            )
            assert r.status == 200
            try:
                while True:
                    got.append(await ws.receive_json(timeout=3))
            except (TimeoutError, TypeError):
                pass
        return got

    got = asyncio.run(run())
    assert not any(m.get("type") == "update" for m in got), got
    assert any(m.get("type") == "unsubscribed" for m in got), got


def test_websocket_ops_respect_max_ops_and_json_refuses_nan(node: LocalNode) -> None:
    oid = node.req("POST", "/api/objects", {}, user="alice").json()["id"]
    ops = [{"op": "set", "key": f"k{i}", "value": i} for i in range(101)]

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(_ws_url(node), headers={"Authorization": f"Bearer {node.tokens['alice']}"}) as ws,
        ):
            await ws.send_json({"type": "ops", "object": oid, "ops": ops, "id": 1})
            too_many = await ws.receive_json(timeout=10)
            await ws.send_str(
                '{"type": "ops", "object": "%s", "id": 2, "ops": [{"op": "set", "key": "n", "value": NaN}]}' % oid
            )
            nan = await ws.receive_json(timeout=10)
            return too_many, nan

    too_many, nan = asyncio.run(run())
    assert too_many["type"] == "error" and "at most 100 ops" in too_many["error"]
    assert nan["type"] == "error" and "NaN" in nan["error"]
    for value in ("NaN", "Infinity", "-Infinity", "1e999"):
        r = node.req(
            "POST",
            f"/api/objects/{oid}/ops",
            raw=('{"ops": [{"op": "set", "key": "n", "value": %s}]}' % value).encode(),
            headers={"Content-Type": "application/json"},
            user="alice",
        )
        assert r.status == 400, (value, r.status, r.body)
    view = node.req("GET", f"/api/objects/{oid}", user="alice")
    assert view.status == 200 and json.loads(view.body)["data"] == {}


def test_signed_sync_with_bad_meta_version_is_not_a_500(nodes_factory: Any) -> None:
    from p2pvalue_node.keys import load_key

    n0, n1 = nodes_factory(2, start=False)
    n0.start()
    n0.add_user("alice")
    key = load_key(n1.dir / "signing.key")
    # an object whose home is n1 (the only node whose meta changes n0 takes)
    oid = "homed-at-n1"
    good = {
        "creator": f"bob@{n1.domain}",
        "participants": [f"bob@{n1.domain}", f"alice@{n0.domain}"],
        "public": False,
        "version": 1,
    }
    body = json.dumps({"items": [{"object_id": oid, "meta": good, "updates": []}]}).encode()
    headers = sign_headers(key, "POST", "/federation/v1/push", n1.domain, n0.domain, body)
    r = request(
        n0.fed_port, "POST", "/federation/v1/push", raw=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert r.status == 200 and r.json()["results"][0]["ok"], r.body
    for version in ("null", "1e999", "[1]", "true", "-1", "2.5"):
        meta = '{"creator": "bob@%s", "participants": ["bob@%s", "alice@%s"], "public": false, "version": %s}' % (
            n1.domain,
            n1.domain,
            n0.domain,
            version,
        )
        body = ('{"objects": [{"id": "%s", "sv": "AA==", "meta": %s}]}' % (oid, meta)).encode()
        headers = sign_headers(key, "POST", "/federation/v1/sync", n1.domain, n0.domain, body)
        r = request(
            n0.fed_port,
            "POST",
            "/federation/v1/sync",
            raw=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert r.status < 500, (version, r.status, r.body[:200])


def _cli_add_account(node: LocalNode, user: str) -> str:
    """`p2pvalue-node add-account` beside the running node; returns the token it printed."""
    res = subprocess.run(
        [sys.executable, "-m", "p2pvalue_node.cli", "add-account", "--config", str(node.config_path), user],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["token"])


def test_a_new_token_replaces_the_old_one_and_cli_tokens_work_at_once(node: LocalNode) -> None:
    old = node.tokens["alice"]
    r = request(node.client_port, "POST", "/api/admin/accounts", {"username": "alice"}, token=ADMIN)
    assert r.status == 201
    new = r.json()["token"]
    assert request(node.client_port, "GET", "/api/whoami", token=new).status == 200
    assert request(node.client_port, "GET", "/api/whoami", token=old).status == 401
    token = _cli_add_account(node, "dave")
    r = request(node.client_port, "GET", "/api/whoami", token=token)  # the running node, no restart
    assert r.status == 200 and r.json()["user"] == f"dave@{node.domain}"
    # a token issued again from the command line revokes the one before it, also in the running node
    assert request(node.client_port, "GET", "/api/whoami", token=_cli_add_account(node, "dave")).status == 200
    assert request(node.client_port, "GET", "/api/whoami", token=token).status == 401


def _derived(creator: str, name: str) -> str:
    """The documented id of an object `creator` creates under the proposed `name` (README, API)."""
    return name + "." + hashlib.sha256(f"{creator}\0{name}".encode()).hexdigest()[:16]


def test_proposed_ids_reveal_nothing_about_other_users_objects(node: LocalNode) -> None:
    """20: ids are per creator. Probing another user's hidden object gets the same answer as a free
    name (201, an id of the prober's own); only the creator's own retry answers 409."""
    alice, mallory = f"alice@{node.domain}", f"mallory@{node.domain}"
    node.add_user("mallory")
    r = node.req("POST", "/api/objects", {"id": "secret-plan"}, user="alice")
    assert r.status == 201, r.body
    hidden = r.json()["id"]
    node.req("POST", f"/api/objects/{hidden}/ops", {"ops": [{"op": "set", "key": "x", "value": 1}]}, user="alice")
    # the prober tries the hidden object's name, its full id, and a name nobody uses: the same answer
    for name in (hidden, "secret-plan", "free-name"):
        r = node.req("POST", "/api/objects", {"id": name}, user="mallory")
        assert r.status == 201, (name, r.status, r.body)
        got = r.json()
        assert got["id"] == _derived(mallory, name) != hidden and got["creator"] == mallory and got["data"] == {}
    assert hidden == _derived(alice, "secret-plan")
    assert node.req("GET", f"/api/objects/{hidden}", user="mallory").status == 404
    # alice's object is untouched, and her own retry of the create is recognisable
    assert node.req("GET", f"/api/objects/{hidden}", user="alice").json()["data"] == {"x": 1}
    r = node.req("POST", "/api/objects", {"id": "secret-plan"}, user="alice")
    assert r.status == 409 and hidden in r.json()["error"]
    # without a proposal the node chooses a random id (never of the derived form)
    oid = node.req("POST", "/api/objects", {}, user="mallory").json()["id"]
    assert "." not in oid and len(oid) == 32
    # a proposal must leave room for the suffix within an id's 128 characters
    assert node.req("POST", "/api/objects", {"id": "n" * 112}, user="mallory").status == 422
    assert len(node.req("POST", "/api/objects", {"id": "n" * 111}, user="mallory").json()["id"]) == 128


BASE = """
domain: n1.test
listen:
  client: {host: 127.0.0.1, port: 1}
  federation: {host: 127.0.0.1, port: 2}
  metrics: {host: "%s", port: 3}
data_dir: /tmp/x
signing_key: /tmp/k
admin_token: admin-token-0123456789
"""


@pytest.mark.parametrize("host", ["0", "::0", "0.0.0.0 ", "0x0", "::", "0.0.0.0", ""])
def test_metrics_wildcards_in_any_spelling_are_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="listen.metrics"):
        parse_config_text(BASE % host)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pvalue_node.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_operator_edges(nodes_factory: Any, tmp_path: Path) -> None:
    (n,) = nodes_factory(1, start=False)
    # check-config --json does not print the admin token; loose key permissions are reported
    (n.dir / "signing.key").chmod(0o644)
    res = _cli("check-config", "--json", str(n.config_path))
    assert res.returncode == 0 and ADMIN not in res.stdout and "<redacted>" in res.stdout
    assert "readable by group or others" in res.stderr
    # two processes on one data dir: the second is refused with a clear message
    n.start()
    res = _cli("serve", "--config", str(n.config_path))
    assert res.returncode == 2 and "another node is running" in res.stderr and "Traceback" not in res.stderr
    assert n.req("GET", "/health").status == 200
    n.stop()
    # an unusable data dir and a corrupt key end in a message, not a traceback
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = tmp_path / "bad.yaml"
    bad.write_text(n.config_path.read_text().replace(str(n.dir / "data"), str(blocker / "data")))
    res = _cli("serve", "--config", str(bad))
    assert res.returncode == 2 and "data_dir" in res.stderr and "Traceback" not in res.stderr, res.stderr
    corrupt = tmp_path / "corrupt.key"
    corrupt.write_text("garbage")
    res = _cli("keygen", "--out", str(corrupt))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--force" in res.stderr
