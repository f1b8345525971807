"""Collaborative objects: pycrdt documents, their metadata, JSON views, state hashes and JSON ops.

Every object is one Yjs document whose content lives under the root map "root" (SwellRT style:
nested maps, lists and text). Documents are loaded lazily from the latest snapshot plus the updates
after it, and the least recently used ones are dropped from memory past a limit.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pycrdt

ROOT = "root"
_USER_RE = re.compile(r"^[a-z0-9._-]{1,64}$")
_ADDR_RE = re.compile(r"^([a-z0-9._-]{1,64})@([a-z0-9.-]{1,253})$")


class OpError(ValueError):
    """A JSON operation that does not fit the document."""


# a name a client proposes for an object it creates; with "." and 16 hex digits it stays within an
# object id's 128 characters (^[A-Za-z0-9_.-]{1,128}$)
OBJECT_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,111}$"


def object_id_for(creator: str, name: str) -> str:
    """The id of the object that `creator` (user@domain) creates under the proposed `name`:
    NAME "." and the first 16 hex digits of SHA-256(creator "\\0" NAME), e.g. alice@n1.x's "plan" is
    "plan.<16 hex>". Public and deterministic, so a client can compute it; per creator, so a proposal
    can only ever collide with the proposer's own objects (another user's "plan" is another id), and a
    node-chosen id (32 hex digits, no ".") never equals a derived one."""
    digest = hashlib.sha256(creator.encode() + b"\0" + name.encode()).hexdigest()
    return f"{name}.{digest[:16]}"


_DERIVED_RE = re.compile(r"^(.{1,111})\.[0-9a-f]{16}$")


def id_fits_creator(object_id: str, creator: str) -> bool:
    """False for an id of the derived form (see object_id_for) that was derived for another creator."""
    m = _DERIVED_RE.match(object_id)
    return m is None or object_id_for(creator, m.group(1)) == object_id


def valid_username(name: str) -> bool:
    return bool(_USER_RE.match(name))


def split_address(addr: str) -> tuple[str, str] | None:
    m = _ADDR_RE.match(addr)
    return (m.group(1), m.group(2)) if m else None


@dataclass
class ObjectMeta:
    id: str
    creator: str  # user@domain
    public: bool
    participants: list[str]  # user@domain, creator included
    version: int = 1
    created_ms: int = 0
    state_vector: bytes = b"\x00"
    state_hash: str = ""

    @property
    def home(self) -> str:
        return self.creator.split("@", 1)[1]

    def domains(self) -> set[str]:
        return {p.split("@", 1)[1] for p in self.participants}

    def has_participant_at(self, domain: str) -> bool:
        return any(p.endswith("@" + domain) for p in self.participants)

    def to_wire(self) -> dict[str, Any]:
        return {
            "creator": self.creator,
            "public": self.public,
            "participants": list(self.participants),
            "version": self.version,
            "created_ms": self.created_ms,
        }


@dataclass
class LoadedDoc:
    doc: pycrdt.Doc
    updates_since_snapshot: int = 0
    pending_writes: int = 0
    broken: bool = False  # a write of an update applied here was refused: dropped, never written again


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """Decode a Yjs v1 state vector: varuint count, then (client, clock) varuint pairs."""
    pos = 0

    def varuint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            if pos >= len(sv):
                raise ValueError("truncated state vector")
            b = sv[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ValueError("varuint too long")

    out: dict[int, int] = {}
    n = varuint()
    if n > 1_000_000:
        raise ValueError("state vector too large")
    for _ in range(n):
        client = varuint()
        out[client] = varuint()
    return out


def lacks(mine: dict[int, int], theirs: dict[int, int]) -> bool:
    """True when the holder of `theirs` is missing something I have."""
    return any(theirs.get(c, 0) < clock for c, clock in mine.items())


def _tidy(value: Any) -> Any:
    # Yjs numbers are doubles: show 3.0 as 3 (the same on every replica, so hashes still agree)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tidy(v) for v in value]
    return value


class ViewError(Exception):
    """A document whose content cannot be read as JSON (never shown as `{}`: that would fake a state hash)."""


def json_view(doc: pycrdt.Doc) -> Any:
    try:
        root = doc.get(ROOT, type=pycrdt.Map)
        return _tidy(root.to_py() or {})
    except RecursionError:
        raise ViewError("the document nests too deeply to be read") from None
    except (TypeError, ValueError) as exc:  # e.g. a foreign client made "root" another kind of type
        raise ViewError(f"the document cannot be read as JSON: {exc}") from None
    except KeyError as exc:  # a key pycrdt lists but cannot look up again (found by the fuzz target)
        raise ViewError(f"the document has a key that cannot be read back: {exc}") from None


def state_hash_of(view: Any) -> str:
    canon = json.dumps(view, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def _resolve(root: pycrdt.Map, path: list[Any]) -> Any:
    cur: Any = root
    for i, part in enumerate(path):
        if isinstance(cur, pycrdt.Map):
            if not isinstance(part, str):
                raise OpError(f"path[{i}] must be a string key inside a map")
            if part not in cur:
                raise OpError(f"path[{i}] {part!r} does not exist")
            cur = cur[part]
        elif isinstance(cur, pycrdt.Array):
            if not isinstance(part, int) or isinstance(part, bool):
                raise OpError(f"path[{i}] must be an integer index inside a list")
            if not 0 <= part < len(cur):
                raise OpError(f"path[{i}] index {part} is out of range")
            cur = cur[part]
        else:
            raise OpError(f"path[{i}] goes inside a value that is neither map nor list")
    return cur


def _new_value(op: dict[str, Any]) -> Any:
    kind = op.get("type", "value")
    value = op.get("value")
    if kind == "value":
        return value
    if kind == "map":
        if value is not None and not isinstance(value, dict):
            raise OpError("value of a new map must be an object")
        return pycrdt.Map(value or {})
    if kind == "list":
        if value is not None and not isinstance(value, list):
            raise OpError("value of a new list must be an array")
        return pycrdt.Array(value or [])
    if kind == "text":
        if value is not None and not isinstance(value, str):
            raise OpError("value of a new text must be a string")
        return pycrdt.Text(value or "")
    raise OpError("type must be one of value, map, list, text")


def apply_ops(doc: pycrdt.Doc, ops: list[dict[str, Any]]) -> int:
    """Apply JSON ops in one transaction; return how many were applied before any error."""
    root = doc.get(ROOT, type=pycrdt.Map)
    applied = 0
    with doc.transaction():
        for n, op in enumerate(ops):
            try:
                _apply_one(root, op)
            except OpError as exc:
                raise OpError(f"ops[{n}]: {exc}") from None
            applied += 1
    return applied


def _apply_one(root: pycrdt.Map, op: dict[str, Any]) -> None:
    kind = op["op"]
    target = _resolve(root, op.get("path", []))
    if kind == "set":
        if not isinstance(target, pycrdt.Map):
            raise OpError("set needs a path to a map")
        target[op["key"]] = _new_value(op)
    elif kind == "delete_key":
        if not isinstance(target, pycrdt.Map):
            raise OpError("delete_key needs a path to a map")
        if op["key"] in target:
            del target[op["key"]]
    elif kind == "append":
        if not isinstance(target, pycrdt.Array):
            raise OpError("append needs a path to a list")
        target.append(_new_value(op))
    elif kind == "insert_text":
        if not isinstance(target, pycrdt.Text):
            raise OpError("insert_text needs a path to a text")
        idx = op["index"]
        if not 0 <= idx <= len(target):
            raise OpError(f"index {idx} is out of range 0..{len(target)}")
        target.insert(idx, op["text"])
    elif kind == "delete_text":
        if not isinstance(target, pycrdt.Text):
            raise OpError("delete_text needs a path to a text")
        idx, length = op["index"], op["length"]
        if not (0 <= idx and 0 <= length and idx + length <= len(target)):
            raise OpError(f"range {idx}+{length} is out of range 0..{len(target)}")
        if length:
            del target[idx : idx + length]
    else:
        raise OpError(f"unknown op {kind!r}")


@dataclass
class DocCache:
    """Loaded documents, least recently used first."""

    limit: int
    docs: OrderedDict[str, LoadedDoc] = field(default_factory=OrderedDict)

    def get(self, object_id: str) -> LoadedDoc | None:
        ld = self.docs.get(object_id)
        if ld is not None:
            self.docs.move_to_end(object_id)
        return ld

    def put(self, object_id: str, ld: LoadedDoc) -> None:
        self.docs[object_id] = ld
        self.docs.move_to_end(object_id)
        self.evict()

    def evict(self) -> None:
        if len(self.docs) <= self.limit:
            return
        for oid in list(self.docs):
            if len(self.docs) <= self.limit:
                break
            # a document with writes on their way to disk stays: dropping it now would lose them
            # from memory until the next load
            if self.docs[oid].pending_writes == 0:
                del self.docs[oid]
