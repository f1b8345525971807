"""The hand-written records that replaced pydantic: first error with its field path, the same wording
as before, strict client bodies, lax config and federation bodies, and the OpenAPI schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest
from p2pvalue_node import api, federation
from p2pvalue_node.config import ConfigError, validate_config
from p2pvalue_node.errors import ApiError

KEY = "A" * 43 + "="


def _config(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "domain": "n1.test",
        "listen": {
            "client": {"host": "127.0.0.1", "port": 8080},
            "federation": {"host": "0.0.0.0", "port": 8448},
            "metrics": {"host": "127.0.0.1", "port": 9108},
        },
        "data_dir": "/tmp/d",
        "signing_key": "/tmp/k",
        "admin_token": "x" * 16,
        "trusted_peers": [{"domain": "n2.test", "address": "http://198.18.0.2:8448", "public_key": KEY}],
    }
    data.update(over)
    return data


def _config_error(data: dict[str, Any]) -> tuple[str | None, str]:
    with pytest.raises(ConfigError) as err:
        validate_config(data, "node.yaml")
    return err.value.field, str(err.value)


def test_config_defaults_and_lax_numbers() -> None:
    cfg = validate_config(
        _config(
            listen={**_config()["listen"], "client": {"host": "h", "port": "8081"}},
            federation={"backoff_max_s": "5.5", "request_timeout_s": 3},
        )
    )
    assert cfg.listen.client.port == 8081
    assert cfg.federation.backoff_max_s == 5.5 and isinstance(cfg.federation.request_timeout_s, float)
    assert cfg.limits.max_loaded_documents == 256 and cfg.storage.compact_every == 200
    assert str(cfg.data_dir) == "/tmp/d" and cfg.peer("n2.test") is not None
    dumped = json.loads(cfg.dump_json())
    assert list(dumped) == [
        "domain",
        "listen",
        "data_dir",
        "signing_key",
        "admin_token",
        "admin_token_file",
        "trusted_peers",
        "limits",
        "federation",
        "storage",
    ]
    assert dumped["federation"]["antientropy_interval_s"] == 30.0
    assert validate_config(_config(trusted_peers=None)).trusted_peers == []


@pytest.mark.parametrize(
    "data, field, message",
    [
        (_config(bogus=1), "bogus", "unknown key"),
        (
            _config(limits={"max_participants": 0}),
            "limits.max_participants",
            "Input should be greater than or equal to 1",
        ),
        (_config(federation={"backoff_max_s": 0}), "federation.backoff_max_s", "Input should be greater than 0"),
        (_config(limits=None), "limits", "Input should be a valid dictionary or instance of Limits"),
        (_config(domain="N1"), "domain", "a lower-case DNS-style name such as n1.ffwien is allowed"),
        (_config(admin_token="short"), "admin_token", "String should have at least 16 characters"),
        (
            _config(trusted_peers=[{"domain": "n2.test", "public_key": KEY}]),
            "trusted_peers[0].address",
            "Field required",
        ),
        (
            _config(trusted_peers=[{"domain": "n2.test", "address": "http://a:1", "public_key": "abc"}]),
            "trusted_peers[0].public_key",
            "base64 of a 32-byte ed25519 public key is allowed",
        ),
        (
            _config(trusted_peers=[{"domain": "n1.test", "address": "http://a:1", "public_key": KEY}]),
            "<top level>",
            "trusted_peers lists this node's own domain n1.test",
        ),
        (
            _config(listen={**_config()["listen"], "metrics": {"host": "0.0.0.0", "port": 1}}),
            "listen.metrics",
            "metrics must listen on the management address, not a wildcard address",
        ),
        (
            _config(listen={**_config()["listen"], "client": {"host": "h", "port": 80.5}}),
            "listen.client.port",
            "Input should be a valid integer, got a number with a fractional part",
        ),
        (
            _config(listen={**_config()["listen"], "client": {"host": "h", "port": True}}),
            "listen.client.port",
            "Input should be a valid integer",
        ),
    ],
)
def test_config_errors_name_the_field(data: dict[str, Any], field: str, message: str) -> None:
    got_field, text = _config_error(data)
    assert got_field == field
    assert text == f"node.yaml: {field}: {message}"


def _api(model: Any, data: Any) -> str:
    with pytest.raises(ApiError) as err:
        api._validate(model, data)
    assert err.value.status == 422
    return err.value.message


def test_client_bodies_are_strict_and_name_the_field() -> None:
    assert _api(api.CreateAccount, {}) == "username: Field required"
    assert _api(api.CreateAccount, {"username": "a", "x": 1}) == "x: Extra inputs are not permitted"
    assert _api(api.CreateAccount, []) == "body: Input should be a valid dictionary or instance of CreateAccount"
    assert _api(api.CreateObject, {"public": 1}) == "public: Input should be a valid boolean"
    assert _api(api.CreateObject, {"participants": ["a", 1]}) == "participants.1: Input should be a valid string"
    assert _api(api.CreateObject, {"participants": ["a"] * 1001}) == (
        "participants: List should have at most 1000 items after validation, not 1001"
    )
    assert _api(api.CreateObject, {"id": "a b"}) == "id: String should match pattern '^[A-Za-z0-9_.-]{1,111}$'"
    assert _api(api.Ops, {"ops": []}) == "ops: List should have at least 1 item after validation, not 0"
    assert _api(api.Ops, {"ops": [{"op": "nope"}]}) == (
        "ops.0.op: Input should be 'set', 'delete_key', 'append', 'insert_text' or 'delete_text'"
    )
    assert _api(api.Ops, {"ops": [{"op": "append"}, {"op": "set"}]}) == "ops.1: Value error, op set needs key"
    assert _api(api.Ops, {"ops": [{"op": "insert_text", "index": True, "text": "a"}]}) == (
        "ops.0.index: Input should be a valid integer"
    )
    assert _api(api.Ops, {"ops": [{"op": "append", "path": ["a", 1, 2.5]}]}) == (
        "ops.0.path.2: Input should be a valid string or integer"
    )
    ops = api._validate(api.Ops, {"ops": [{"op": "set", "key": "k", "value": {"a": [1]}}]})
    assert ops.ops[0].dump() == {
        "op": "set",
        "path": [],
        "key": "k",
        "value": {"a": [1]},
        "type": "value",
        "index": None,
        "text": None,
        "length": None,
    }


def test_federation_bodies_ignore_extra_keys_and_accept_numeric_strings() -> None:
    body = {
        "items": [
            {
                "object_id": "a",
                "x": 1,
                "updates": [{"update": "AA==", "origin_node": "n2.test", "origin_ts_ms": "17", "future": True}],
            }
        ],
        "y": 2,
    }
    parsed = federation._parse(federation.PushBody, json.dumps(body).encode())
    assert parsed.items[0].updates[0].origin_ts_ms == 17 and parsed.items[0].meta is None
    with pytest.raises(ApiError) as err:
        federation._parse(federation.SyncBody, b'{"objects": [{"id": "a"}]}')
    assert err.value.message == "objects.0.sv: Field required"


def test_openapi_schemas_describe_the_bodies() -> None:
    from p2pvalue_node.openapi import document

    schemas = document()["components"]["schemas"]
    assert schemas["Ops"]["properties"]["ops"] == {
        "items": {"$ref": "#/components/schemas/Op"},
        "minItems": 1,
        "title": "Ops",
        "type": "array",
    }
    assert schemas["Op"]["required"] == ["op"] and schemas["Op"]["additionalProperties"] is False
    proposed = schemas["CreateObject"]["properties"]["id"]
    assert "sha256(creator + '\\0' + NAME)" in proposed.pop("description")
    assert proposed == {
        "anyOf": [{"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,111}$"}, {"type": "null"}],
        "default": None,
        "title": "Id",
    }
    assert schemas["CreateAccount"]["properties"]["username"] == {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "title": "Username",
    }


def test_constructing_a_record_checks_it_like_parsing() -> None:
    # anti-entropy builds PushItem/WireUpdate from a peer's sync answer: bad values must raise a
    # ValueError there (the entry is skipped), as pydantic's constructor did
    item = federation.PushItem(object_id="ok", meta=None, updates=[])
    assert item.updates == [] and item.meta is None
    with pytest.raises(ValueError, match="String should match pattern"):
        federation.PushItem(object_id="../x", meta=None, updates=[])
    with pytest.raises(ValueError, match="Input should be a valid dictionary"):
        federation.PushItem(object_id="ok", meta=[1], updates=[])
    with pytest.raises(ValueError, match="Input should be a valid string"):
        federation.WireUpdate(update=5, origin_node="n2.test", origin_ts_ms=0, author=None, repair=True)
    assert federation.WireUpdate(update="AA==", origin_node="n2.test", origin_ts_ms=0).repair is False
