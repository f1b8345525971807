"""The OpenAPI 3.1 document of the client API, served at GET /openapi.json.

Request bodies come from the same records (validation.Record) the handlers validate with, so the document
cannot drift from what the node accepts.
"""

from __future__ import annotations

from typing import Any

from . import __version__

_ERR = {
    "description": "JSON error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_OK = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}


def _op(
    summary: str,
    body: str | None = None,
    binary: bool = False,
    ok: str = "200",
    params: list[dict[str, Any]] | None = None,
    auth: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "responses": {ok: _OK, "4XX": _ERR}}
    if body:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if binary:
        out["requestBody"] = {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    if params:
        out["parameters"] = params
    if not auth:
        out["security"] = []
    return out


_ID = {
    "name": "object_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
}


def document() -> dict[str, Any]:
    from .api import CreateAccount, CreateObject, Ops, PatchObject

    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "status"],
            "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
        }
    }
    for model in (CreateAccount, CreateObject, PatchObject, Ops):
        schema = model.json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "P2Pvalue node client API", "version": __version__},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/health": {"get": _op("Liveness", auth=False)},
            "/api/admin/accounts": {
                "post": _op("Create an account (admin token)", "CreateAccount", ok="201"),
                "get": _op("List accounts (admin token)"),
            },
            "/api/whoami": {"get": _op("The caller's address")},
            "/api/objects": {
                "get": _op("Objects the caller can read"),
                "post": _op("Create an object (its id: see CreateObject.id)", "CreateObject", ok="201"),
            },
            "/api/objects/{object_id}": {
                "get": _op("JSON view and state hash", params=[_ID]),
                "patch": _op("Participants and public flag (creator)", "PatchObject", params=[_ID]),
            },
            "/api/objects/{object_id}/state": {
                "get": _op(
                    "Binary Yjs state (optionally since ?sv=)",
                    params=[_ID, {"name": "sv", "in": "query", "required": False, "schema": {"type": "string"}}],
                )
            },
            "/api/objects/{object_id}/update": {"post": _op("Apply a binary Yjs update", binary=True, params=[_ID])},
            "/api/objects/{object_id}/ops": {"post": _op("Apply JSON operations", "Ops", params=[_ID])},
            "/api/contributions": {
                "get": _op(
                    "Contribution ledger rows and totals",
                    params=[
                        {"name": "contributor", "in": "query", "required": False, "schema": {"type": "string"}},
                        {"name": "object", "in": "query", "required": False, "schema": {"type": "string"}},
                    ],
                )
            },
            "/api/contributions/totals": {"get": _op("Node-wide ledger totals")},
            "/api/ws": {"get": _op("WebSocket for live updates (see README)")},
        },
    }
