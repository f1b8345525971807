"""Small declarative records for the node's config and JSON bodies, checked by hand-written code.

The node used pydantic for this; pydantic and the models it builds cost about 9 MB of resident memory
per node process, a lot on a 128 MB device. These records keep what the node relied on:

- the first error, with its location (a tuple of keys and list indexes) and a message worded like
  pydantic's ("Field required", "Input should be greater than or equal to 1", ...);
- extra keys rejected ("forbid") or dropped ("ignore");
- strict checks for client bodies (a JSON bool is not an int, a number is not a string) and lax ones
  for the config and federation bodies (numbers written as strings are accepted, as before);
- a JSON schema of each record for the OpenAPI document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

_REQUIRED: Any = object()


class ValidationFailed(ValueError):
    """The first problem found: `loc` is the path to it (keys and list indexes), `msg` the message.
    A ValueError, as pydantic's ValidationError was, so callers catching ValueError still do."""

    def __init__(self, loc: tuple[int | str, ...], msg: str, kind: str = "value_error") -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg
        self.kind = kind


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class F:
    """One field: its kind, constraints and default.

    kind: "str", "int", "float", "bool", "path", "any", "dict" (a JSON object), "str_or_int",
    "literal" (one of `choices`), "list" (of `item`, another F) or a Record subclass.
    """

    def __init__(
        self,
        kind: Any,
        *,
        default: Any = _REQUIRED,
        factory: Callable[[], Any] | None = None,
        optional: bool = False,
        min_length: int | None = None,
        max_length: int | None = None,
        pattern: str | None = None,
        ge: float | None = None,
        le: float | None = None,
        gt: float | None = None,
        choices: tuple[str, ...] = (),
        item: F | None = None,
        check: Callable[[Any], Any] | None = None,
        before: Callable[[Any], Any] | None = None,
        description: str | None = None,
    ) -> None:
        self.kind = kind
        self.default = default
        self.factory = factory
        self.optional = optional
        self.min_length = min_length
        self.max_length = max_length
        self.pattern = pattern
        self._re = re.compile(pattern) if pattern else None
        self.ge, self.le, self.gt = ge, le, gt
        self.choices = choices
        self.item = item
        self.check = check  # called with the converted value; raises ValueError with a message
        self.before = before  # called with the raw value before any check
        self.description = description

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED and self.factory is None

    def make_default(self) -> Any:
        return self.factory() if self.factory is not None else self.default

    # -- validation --------------------------------------------------------------------------
    def validate(self, value: Any, loc: tuple[int | str, ...], strict: bool) -> Any:
        if self.before is not None:
            value = self.before(value)
        if value is None and self.optional:
            return None
        value = self._convert(value, loc, strict)
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as exc:
                raise ValidationFailed(loc, f"Value error, {exc}") from None
        return value

    def _convert(self, v: Any, loc: tuple[int | str, ...], strict: bool) -> Any:
        kind = self.kind
        if isinstance(kind, type) and issubclass(kind, Record):
            return kind.validate(v, loc)
        if kind == "str":
            if not isinstance(v, str):
                raise ValidationFailed(loc, "Input should be a valid string")
            self._lengths(v, loc, "String", "character")
            if self._re is not None and not self._re.search(v):
                raise ValidationFailed(loc, f"String should match pattern '{self.pattern}'")
            return v
        if kind == "int":
            v = _to_int(v, loc, strict)
            self._bounds(v, loc)
            return v
        if kind == "float":
            v = _to_float(v, loc, strict)
            self._bounds(v, loc)
            return v
        if kind == "bool":
            return _to_bool(v, loc, strict)
        if kind == "path":
            if isinstance(v, Path):
                return v
            if not isinstance(v, str):
                raise ValidationFailed(loc, "Input is not a valid path")
            return Path(v)
        if kind == "any":
            return v
        if kind == "dict":
            if not isinstance(v, dict):
                raise ValidationFailed(loc, "Input should be a valid dictionary")
            return v
        if kind == "str_or_int":
            if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)):
                return v
            raise ValidationFailed(loc, "Input should be a valid string or integer")
        if kind == "literal":
            if isinstance(v, str) and v in self.choices:
                return v
            names = [repr(c) for c in self.choices]
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
            raise ValidationFailed(loc, f"Input should be {listed}")
        if kind == "list":
            if not isinstance(v, list):
                raise ValidationFailed(loc, "Input should be a valid list")
            # the length first: a huge list is refused before its items are looked at
            self._lengths(v, loc, "List", "item", f" after validation, not {len(v)}")
            assert self.item is not None
            return [self.item.validate(x, (*loc, i), strict) for i, x in enumerate(v)]
        raise AssertionError(f"unknown field kind {kind!r}")

    def _lengths(self, v: Any, loc: tuple[int | str, ...], what: str, unit: str, tail: str = "") -> None:
        if self.min_length is not None and len(v) < self.min_length:
            raise ValidationFailed(loc, f"{what} should have at least {_plural(self.min_length, unit)}{tail}")
        if self.max_length is not None and len(v) > self.max_length:
            raise ValidationFailed(loc, f"{what} should have at most {_plural(self.max_length, unit)}{tail}")

    def _bounds(self, v: float, loc: tuple[int | str, ...]) -> None:
        if self.ge is not None and v < self.ge:
            raise ValidationFailed(loc, f"Input should be greater than or equal to {self.ge}")
        if self.gt is not None and v <= self.gt:
            raise ValidationFailed(loc, f"Input should be greater than {self.gt}")
        if self.le is not None and v > self.le:
            raise ValidationFailed(loc, f"Input should be less than or equal to {self.le}")

    # -- JSON schema ---------------------------------------------------------------------------
    def schema(self, defs: dict[str, Any], ref_template: str) -> dict[str, Any]:
        kind = self.kind
        s: dict[str, Any]
        if isinstance(kind, type) and issubclass(kind, Record):
            if kind.__name__ not in defs:
                defs[kind.__name__] = {}  # placeholder against recursion
                defs[kind.__name__] = kind.schema_of(defs, ref_template)
            s = {"$ref": ref_template.format(model=kind.__name__)}
        elif kind == "str":
            s = {"type": "string"}
            if self.min_length is not None:
                s["minLength"] = self.min_length
            if self.max_length is not None:
                s["maxLength"] = self.max_length
            if self.pattern:
                s["pattern"] = self.pattern
        elif kind in ("int", "float"):
            s = {"type": "integer" if kind == "int" else "number"}
            if self.ge is not None:
                s["minimum"] = self.ge
            if self.gt is not None:
                s["exclusiveMinimum"] = self.gt
            if self.le is not None:
                s["maximum"] = self.le
        elif kind == "bool":
            s = {"type": "boolean"}
        elif kind == "path":
            s = {"type": "string", "format": "path"}
        elif kind == "any":
            s = {}
        elif kind == "dict":
            s = {"type": "object", "additionalProperties": True}
        elif kind == "str_or_int":
            s = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
        elif kind == "literal":
            s = {"enum": list(self.choices), "type": "string"}
        elif kind == "list":
            assert self.item is not None
            s = {"items": self.item.schema(defs, ref_template), "type": "array"}
            if self.min_length is not None:
                s["minItems"] = self.min_length
            if self.max_length is not None:
                s["maxItems"] = self.max_length
        else:
            raise AssertionError(f"unknown field kind {kind!r}")
        if self.optional:
            s = {"anyOf": [s, {"type": "null"}]}
        return s


def _to_int(v: Any, loc: tuple[int | str, ...], strict: bool) -> int:
    if isinstance(v, bool):
        raise ValidationFailed(loc, "Input should be a valid integer")
    if isinstance(v, int):
        return v
    if not strict:
        if isinstance(v, float):
            if v.is_integer():
                return int(v)
            raise ValidationFailed(loc, "Input should be a valid integer, got a number with a fractional part")
        if isinstance(v, str):
            try:
                return int(v.strip())
            except ValueError:
                raise ValidationFailed(
                    loc, "Input should be a valid integer, unable to parse string as an integer"
                ) from None
    raise ValidationFailed(loc, "Input should be a valid integer")


def _to_float(v: Any, loc: tuple[int | str, ...], strict: bool) -> float:
    if isinstance(v, bool):
        raise ValidationFailed(loc, "Input should be a valid number")
    if isinstance(v, (int, float)):
        return float(v)
    if not strict and isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            raise ValidationFailed(loc, "Input should be a valid number, unable to parse string as a number") from None
    raise ValidationFailed(loc, "Input should be a valid number")


_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


def _to_bool(v: Any, loc: tuple[int | str, ...], strict: bool) -> bool:
    if isinstance(v, bool):
        return v
    if not strict:
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.lower() in _TRUE | _FALSE:
            return v.lower() in _TRUE
    raise ValidationFailed(loc, "Input should be a valid boolean")


def _title(name: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in name.split("_"))


class Record:
    """A record with declared fields (`FIELDS`, in order). Instances are plain objects with one
    attribute per field. `validate(data)` builds one from parsed data; the constructor takes the fields
    as keywords and checks them the same way (raising ValidationFailed), as a pydantic model did."""

    FIELDS: ClassVar[dict[str, F]] = {}
    EXTRA: ClassVar[str] = "forbid"  # or "ignore"
    STRICT: ClassVar[bool] = False

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(type(self).validate(values).__dict__)

    def check(self) -> None:
        """Checks across fields, after each field is valid; raise ValueError with a message."""

    @classmethod
    def validate(cls, data: Any, loc: tuple[int | str, ...] = ()) -> Any:
        if not isinstance(data, dict):
            raise ValidationFailed(loc, f"Input should be a valid dictionary or instance of {cls.__name__}")
        obj = cls.__new__(cls)
        for name, f in cls.FIELDS.items():
            if name in data:
                value = f.validate(data[name], (*loc, name), cls.STRICT)
            elif f.required:
                raise ValidationFailed((*loc, name), "Field required", "missing")
            else:
                value = f.make_default()
            setattr(obj, name, value)
        if cls.EXTRA == "forbid":
            for key in data:
                if key not in cls.FIELDS:
                    raise ValidationFailed((*loc, key), "Extra inputs are not permitted", "extra_forbidden")
        try:
            obj.check()
        except ValueError as exc:
            raise ValidationFailed(loc, f"Value error, {exc}") from None
        return obj

    def dump(self) -> dict[str, Any]:
        """The record as plain data (nested records as dicts, paths as strings), in field order."""
        return {name: _plain(getattr(self, name)) for name in self.FIELDS}

    @classmethod
    def schema_of(cls, defs: dict[str, Any], ref_template: str) -> dict[str, Any]:
        props: dict[str, Any] = {}
        required = []
        for name, f in cls.FIELDS.items():
            p = {**f.schema(defs, ref_template), "title": _title(name)}
            if f.description:
                p["description"] = f.description
            if f.required:
                required.append(name)
            elif f.factory is None:
                p["default"] = _plain(f.default)
            props[name] = p
        out: dict[str, Any] = {"properties": props, "title": cls.__name__, "type": "object"}
        if required:
            out["required"] = required
        if cls.EXTRA == "forbid":
            out["additionalProperties"] = False
        return out

    @classmethod
    def json_schema(cls, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
        defs: dict[str, Any] = {}
        out = cls.schema_of(defs, ref_template)
        if defs:
            out["$defs"] = defs
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.FIELDS)
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.dump() == other.dump()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


def _plain(v: Any) -> Any:
    if isinstance(v, Record):
        return v.dump()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


_STRICT_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def strict_json_loads(data: str | bytes) -> Any:
    """json.loads that refuses NaN, Infinity and numbers that overflow to infinity (ValueError).

    One decoder made once (json.loads with hooks builds a new one per call)."""
    if isinstance(data, (bytes, bytearray)):
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    return _STRICT_DECODER.decode(data)
