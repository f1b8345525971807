"""Structure-aware hypothesis strategies for binary Yjs v1 updates.

They build updates the way the encoding is laid out (clients, structs with info bits, origins,
parents, contents of every kind, lib0 `Any` values nested to any depth, delete sets with any clocks
and lengths) and then optionally damage them (truncation, a flipped byte, trailing junk, a huge
count), so that the pre-parse (p2pvalue_node.yupdate) and pycrdt behind it meet both well-formed and
almost-well-formed input. Used by tests/node/test_node_yupdate_fuzz.py and benchmarks/yjs_fuzz_long.py.
"""

from __future__ import annotations

import struct

from hypothesis import strategies as st
from yjs_bytes import varstring, varuint

small_uint = st.integers(min_value=0, max_value=40)
clock = st.one_of(small_uint, st.integers(min_value=0, max_value=(1 << 33)))
text = st.text(max_size=12)


def _varint(n: int) -> bytes:
    neg = n < 0
    n = abs(n)
    first = (n & 0x3F) | (0x40 if neg else 0)
    n >>= 6
    out = bytearray([first | (0x80 if n else 0)])
    while n:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
    return bytes(out)


any_leaf = st.one_of(
    st.sampled_from([b"\x7f", b"\x7e", b"\x79", b"\x78"]),  # undefined, null, false, true
    st.integers(min_value=-(2**53), max_value=2**53).map(lambda n: b"\x7d" + _varint(n)),
    st.floats(allow_nan=True).map(lambda f: b"\x7b" + struct.pack(">d", f)),
    st.floats(width=32, allow_nan=True).map(lambda f: b"\x7c" + struct.pack(">f", f)),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda n: b"\x7a" + struct.pack(">q", n)),
    text.map(lambda s: b"\x77" + varstring(s)),
    st.binary(max_size=8).map(lambda b: b"\x74" + varuint(len(b)) + b),
    st.integers(min_value=0, max_value=115).map(lambda t: bytes([t])),  # unknown tags
)


def _array(children: list[bytes]) -> bytes:
    return b"\x75" + varuint(len(children)) + b"".join(children)


def _map(entries: list[tuple[str, bytes]]) -> bytes:
    return b"\x76" + varuint(len(entries)) + b"".join(varstring(k) + v for k, v in entries)


any_tree = st.recursive(
    any_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(_array), st.lists(st.tuples(text, children), max_size=3).map(_map)
    ),
    max_leaves=10,
)
# a chain of single-element arrays/maps around a value: the nesting the pre-parse bounds
deep_any = st.tuples(st.integers(min_value=0, max_value=300), st.booleans(), any_leaf).map(
    lambda t: (b"\x75\x01" if t[1] else b"\x76\x01\x01k") * t[0] + t[2]
)
any_value = st.one_of(any_tree, deep_any)


def _json_text(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


json_string = st.one_of(
    st.sampled_from(['"x"', "1", "null", '{"a": [1, "]"]}']), st.integers(min_value=0, max_value=200).map(_json_text)
).map(varstring)

type_ref = st.one_of(st.integers(min_value=0, max_value=6), st.integers(min_value=7, max_value=40))


@st.composite
def content(draw: st.DrawFn, ref: int) -> bytes:
    if ref == 1:
        return varuint(draw(st.one_of(st.integers(1, 10), clock)))
    if ref == 2:
        return varuint(n := draw(st.integers(0, 3))) + b"".join(draw(json_string) for _ in range(n))
    if ref == 3:
        b = draw(st.binary(max_size=8))
        return varuint(len(b)) + b
    if ref == 4:
        return varstring(draw(text))
    if ref == 5:
        return draw(json_string)
    if ref == 6:
        return varstring(draw(text)) + draw(json_string)
    if ref == 7:
        t = draw(type_ref)
        return varuint(t) + (varstring(draw(text)) if t in (3, 5) else b"")
    if ref == 8:
        n = draw(st.integers(0, 3))
        return varuint(n) + b"".join(draw(any_value) for _ in range(n))
    if ref == 9:
        return varstring(draw(text)) + draw(any_value)
    return draw(st.binary(max_size=6))  # an unknown content reference: whatever follows


@st.composite
def struct_bytes(draw: st.DrawFn, clients: list[int]) -> bytes:
    ref = draw(st.one_of(st.integers(1, 9), st.sampled_from([0, 10]), st.integers(11, 31)))
    if ref in (0, 10):
        return bytes([ref]) + varuint(draw(st.one_of(st.integers(1, 10), clock)))
    has_origin, has_right, has_sub = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    info = ref | (0x80 if has_origin else 0) | (0x40 if has_right else 0) | (0x20 if has_sub else 0)
    out = bytes([info])
    for flag in (has_origin, has_right):
        if flag:
            out += varuint(draw(st.sampled_from(clients))) + varuint(draw(small_uint))
    if not (has_origin or has_right):
        if draw(st.booleans()):
            out += varuint(1) + varstring(draw(st.sampled_from(["root", "root", "other", ""])))
        else:
            out += varuint(0) + varuint(draw(st.sampled_from(clients))) + varuint(draw(small_uint))
        if has_sub:
            out += varstring(draw(text))
    return out + draw(content(ref))


@st.composite
def yjs_update(draw: st.DrawFn) -> bytes:
    clients = draw(st.lists(st.integers(min_value=0, max_value=2**32), min_size=1, max_size=3, unique=True))
    out = varuint(len(clients))
    for c in clients:
        structs = draw(st.lists(struct_bytes(clients), max_size=4))
        out += varuint(len(structs)) + varuint(c) + varuint(draw(clock)) + b"".join(structs)
    ds = draw(st.lists(st.tuples(st.sampled_from(clients), st.lists(st.tuples(clock, clock), max_size=3)), max_size=2))
    out += varuint(len(ds)) + b"".join(
        varuint(c) + varuint(len(r)) + b"".join(varuint(a) + varuint(b) for a, b in r) for c, r in ds
    )
    return out


@st.composite
def damaged(draw: st.DrawFn, update: bytes) -> bytes:
    how = draw(st.sampled_from(["none", "none", "truncate", "flip", "junk", "huge"]))
    if how == "truncate" and update:
        return update[: draw(st.integers(0, len(update) - 1))]
    if how == "flip" and update:
        i = draw(st.integers(0, len(update) - 1))
        return update[:i] + bytes([update[i] ^ draw(st.integers(1, 255))]) + update[i + 1 :]
    if how == "junk":
        return update + draw(st.binary(min_size=1, max_size=4))
    if how == "huge":
        return varuint(draw(st.integers(2**20, 2**40))) + update[1:]
    return update


updates = yjs_update().flatmap(damaged)
