"""A bounded, structure-aware reader of Yjs v1 updates, run before pycrdt ever sees untrusted bytes.

pycrdt (yrs) decodes and reads nested values recursively: an `Any` array nested ~26,000 deep
overflows an 8 MiB stack inside `Doc.apply_update` (SIGSEGV, which no `except` can catch), ~13,000
inside `to_py`, and on a 1 MiB thread stack about 4,000 (apply) and 2,000 (read). `check_update`
walks the whole update iteratively (lib0 varint encoding: structs, item contents, `Any` values,
JSON strings, the delete set), bounds every length by the bytes that are left, refuses nesting
deeper than `MAX_NESTING`, unknown content or type references, zero-length items, clocks past
2^31 and trailing bytes, and returns what the update holds. It never recurses, so it is safe on
any stack; a refusal is an `UpdateRejected` (a ValueError) naming the offset and the problem.

Nested *shared types* (a map in a map in ...) cannot be bounded from the update alone (an item's
parent may be inherited from an item stored earlier), so `type_depth` measures a document's type
nesting without recursion; the node runs it on a trial copy when an update adds nested types.
`MAX_NESTING` (64) bounds both: a value read back is at most 128 levels deep, far below what a
1 MiB stack survives (tested in tests/node/test_node_yupdate.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pycrdt

MAX_NESTING = 64
MAX_CLOCK = 1 << 31

# item content references (Yjs: ContentDeleted=1 .. ContentDoc=9; 0 is GC, 10 is Skip)
_GC, _DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC, _SKIP = range(11)
_XML_ELEMENT, _XML_HOOK = 3, 5  # type references that carry a name
_MAX_TYPE_REF = 6  # Array, Map, Text, XmlElement, XmlFragment, XmlHook, XmlText
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


class UpdateRejected(ValueError):
    """An update the node refuses to hand to pycrdt."""


@dataclass
class UpdateShape:
    """What a checked update holds."""

    structs: int  # items, GC and skip structs
    delete_ranges: int
    nested_types: int  # new shared types whose parent is not a root name (their depth needs a check)
    max_value_depth: int
    formats: int = 0  # format items: pycrdt lists one under a map key it then cannot look up (needs a readback)

    @property
    def empty(self) -> bool:
        return self.structs == 0 and self.delete_ranges == 0


class _Reader:
    __slots__ = ("data", "pos", "max_depth")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = 0

    def fail(self, what: str) -> UpdateRejected:
        return UpdateRejected(f"invalid Yjs update at byte {self.pos}: {what}")

    def left(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varuint(self) -> int:
        result = shift = 0
        while True:
            b = self.u8()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise self.fail("varint too long")

    def varint(self) -> None:
        b = self.u8()
        shift = 6
        while b & 0x80:
            b = self.u8()
            shift += 7
            if shift > 70:
                raise self.fail("varint too long")

    def count(self, what: str, min_bytes_each: int = 1) -> int:
        n = self.varuint()
        if n * min_bytes_each > self.left():
            raise self.fail(f"{what} count {n} exceeds the bytes left")
        return n

    def skip(self, n: int) -> None:
        if n > self.left():
            raise self.fail("truncated")
        self.pos += n

    def string(self) -> str:
        n = self.varuint()
        if n > self.left():
            raise self.fail("string length exceeds the bytes left")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("string is not UTF-8") from None

    def clock_range(self, clock: int, length: int) -> None:
        if clock + length > MAX_CLOCK:
            raise self.fail(f"clock {clock}+{length} is beyond {MAX_CLOCK}")

    def json_string(self) -> None:
        depth = json_depth(self.string())
        self.max_depth = max(self.max_depth, depth)
        if depth > MAX_NESTING:
            raise self.fail(f"a JSON value nests {depth} deep (at most {MAX_NESTING} is allowed)")

    def any_value(self) -> None:
        """One lib0 `Any`, iteratively: a stack of [elements left, is_map] per open array/map."""
        stack: list[list[int]] = [[1, 0]]
        while stack:
            top = stack[-1]
            if top[0] == 0:
                stack.pop()
                continue
            top[0] -= 1
            if top[1]:
                self.string()  # the key of a map entry
            tag = self.u8()
            if tag in (127, 126, 121, 120):  # undefined, null, false, true
                continue
            if tag == 125:
                self.varint()
            elif tag == 124:
                self.skip(4)
            elif tag in (123, 122):
                self.skip(8)
            elif tag == 119:
                self.string()
            elif tag == 116:
                self.skip(self.count("buffer"))
            elif tag in (118, 117):
                n = self.count("map entries" if tag == 118 else "array elements", 2 if tag == 118 else 1)
                stack.append([n, int(tag == 118)])
                depth = len(stack) - 1
                if depth > self.max_depth:
                    self.max_depth = depth
                    if depth > MAX_NESTING:
                        raise self.fail(
                            f"a value nests deeper than {MAX_NESTING} (at most {MAX_NESTING} "
                            "levels of arrays and maps are allowed)"
                        )
            else:
                raise self.fail(f"unknown Any tag {tag}")


def json_depth(text: str) -> int:
    """Bracket nesting depth of a JSON text (brackets inside string literals do not count)."""
    if "[" not in text and "{" not in text:
        return 0
    depth = best = 0
    for m in _BRACKETS.finditer(_JSON_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            best = max(best, depth)
        else:
            depth -= 1
    return best


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def check_update(data: bytes) -> UpdateShape:
    """Walk a Yjs v1 update without recursion; raise UpdateRejected if it is malformed or too deep."""
    r = _Reader(data)
    structs = nested_types = formats = 0
    for _ in range(r.count("clients", 3)):
        n_structs = r.count("structs", 2)
        r.varuint()  # client
        clock = r.varuint()
        r.clock_range(clock, 0)
        for _ in range(n_structs):
            info = r.u8()
            ref = info & 0x1F
            if ref in (_GC, _SKIP):
                length = r.varuint()
            else:
                has_origin, has_right = info & 0x80, info & 0x40
                root_parent = False
                if has_origin:
                    r.varuint()
                    r.varuint()
                if has_right:
                    r.varuint()
                    r.varuint()
                if not (has_origin or has_right):
                    if r.varuint() == 1:
                        r.string()  # a root type's name
                        root_parent = True
                    else:
                        r.varuint()  # the parent item's id
                        r.varuint()
                    if info & 0x20:
                        r.string()  # the key inside a parent map
                length = _content(r, ref)
                if ref == _TYPE and not root_parent:
                    nested_types += 1
                formats += ref == _FORMAT
            if length == 0:
                raise r.fail("a struct of length 0")
            r.clock_range(clock, length)
            clock += length
            structs += 1
    ranges = 0
    for _ in range(r.count("delete set clients", 2)):
        r.varuint()  # client
        for _ in range(r.count("delete ranges", 2)):
            clock, length = r.varuint(), r.varuint()
            r.clock_range(clock, length)
            ranges += 1
    if r.left():
        raise r.fail(f"{r.left()} trailing bytes after the delete set")
    return UpdateShape(structs, ranges, nested_types, r.max_depth, formats)


def _content(r: _Reader, ref: int) -> int:
    """Read an item's content; return its length in clock units."""
    if ref == _DELETED:
        return r.varuint()
    if ref == _JSON:
        n = r.count("JSON values")
        for _ in range(n):
            r.json_string()
        return n
    if ref == _BINARY:
        r.skip(r.count("binary"))
        return 1
    if ref == _STRING:
        return _utf16_len(r.string())
    if ref == _EMBED:
        r.json_string()
        return 1
    if ref == _FORMAT:
        r.string()
        r.json_string()
        return 1
    if ref == _TYPE:
        type_ref = r.varuint()
        if type_ref > _MAX_TYPE_REF:
            raise r.fail(f"unknown type reference {type_ref}")
        if type_ref in (_XML_ELEMENT, _XML_HOOK):
            r.string()
        return 1
    if ref == _ANY:
        n = r.count("Any values")
        for _ in range(n):
            r.any_value()
        return n
    if ref == _DOC:
        r.string()  # guid
        r.any_value()  # options
        return 1
    raise r.fail(f"unknown content reference {ref}")


_SHARED = (pycrdt.Map, pycrdt.Array, pycrdt.Text, pycrdt.XmlFragment, pycrdt.XmlElement, pycrdt.XmlText)


def type_depth(doc: pycrdt.Doc, root: str) -> int:
    """Nesting depth of shared types under the root map `root` (1 = the root itself), without recursion."""
    best = 0
    stack: list[tuple[object, int]] = [(doc.get(root, type=pycrdt.Map), 1)]
    while stack:
        node, depth = stack.pop()
        best = max(best, depth)
        if depth > 2 * MAX_NESTING:  # far past any limit: stop walking
            return depth
        if isinstance(node, pycrdt.Map):
            children = list(node.values())
        elif isinstance(node, pycrdt.Array):
            children = list(node)
        elif isinstance(node, (pycrdt.XmlFragment, pycrdt.XmlElement)):
            children = list(node.children)
        else:
            continue
        stack.extend((c, depth + 1) for c in children if isinstance(c, _SHARED))
    return best


def value_depth(value: object) -> int:
    """Nesting depth of a JSON value (lists and dicts), without recursion."""
    best = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)):
            depth += 1
            best = max(best, depth)
            if depth > MAX_NESTING:
                return depth
            stack.extend((c, depth) for c in (v.values() if isinstance(v, dict) else v))
    return best
