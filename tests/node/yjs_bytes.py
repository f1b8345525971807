"""Hand-encoded Yjs v1 updates (lib0 varints) for the hardening tests and the fuzz targets."""

from __future__ import annotations


def varuint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varstring(s: str) -> bytes:
    b = s.encode()
    return varuint(len(b)) + b


def nested_any(depth: int, leaf: bytes = b"\x7e") -> bytes:
    """An Any value: `depth` arrays of one element around `leaf` (null)."""
    return b"\x75\x01" * depth + leaf


def any_update(value: bytes, key: str = "k", client: int = 1234, clock: int = 0) -> bytes:
    """One item under root map "root" at `key` holding the encoded Any `value`."""
    info = 8 | 0x20  # ContentAny, with a parent key
    item = bytes([info]) + varuint(1) + varstring("root") + varstring(key) + varuint(1) + value
    return varuint(1) + varuint(1) + varuint(client) + varuint(clock) + item + varuint(0)


def deep_update(depth: int, key: str = "k") -> bytes:
    return any_update(nested_any(depth), key)
