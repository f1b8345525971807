"""The wire spec file: which veth ends form which link, with which behaviour.

{"seed": 42, "links": [{"id": "w1~w2", "a_if": "...", "b_if": "...",
                         "forward": {Direction fields}, "reverse": {...}, "up": true}, ...]}
"load" (optional, a number) is only a hint for split_links and is ignored here.
forward shapes frames read on a_if (sent by device a) and sent out on b_if; reverse the other way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import InputError, Problem
from toolkit.topology.direction import direction_from_dict, direction_to_dict
from toolkit.topology.model import Direction

IFNAME_MAX = 15


@dataclass(frozen=True)
class LinkSpec:
    id: str
    a_if: str
    b_if: str
    forward: Direction
    reverse: Direction
    up: bool = True

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "a_if": self.a_if,
            "b_if": self.b_if,
            "forward": direction_to_dict(self.forward),
            "reverse": direction_to_dict(self.reverse),
            "up": self.up,
        }


@dataclass(frozen=True)
class WireSpec:
    seed: int
    links: tuple[LinkSpec, ...]

    def to_dict(self) -> dict[str, object]:
        return {"seed": self.seed, "links": [link.to_dict() for link in self.links]}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def parse_spec(data: object, source: str = "<spec>") -> WireSpec:
    """Check a decoded spec; every problem is collected into one InputError."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise InputError(f"{source}: the spec must be a JSON object")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        problems.append("seed must be an integer")
        seed = 0
    raw_links = data.get("links")
    if not isinstance(raw_links, list):
        raise InputError(f"{source}: links must be a list")
    links: list[LinkSpec] = []
    ids: set[str] = set()
    ifnames: set[str] = set()
    for i, raw in enumerate(raw_links):
        where = f"links[{i}]"
        if not isinstance(raw, dict):
            problems.append(f"{where} must be an object")
            continue
        unknown = set(raw) - {"id", "a_if", "b_if", "forward", "reverse", "up", "load"}
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        link_id = raw.get("id")
        if not isinstance(link_id, str) or not link_id:
            problems.append(f"{where}: id must be a non-empty string")
            continue
        where = f"link {link_id}"
        if link_id in ids:
            problems.append(f"{where}: duplicate id")
        ids.add(link_id)
        names = []
        for key in ("a_if", "b_if"):
            name = raw.get(key)
            if not isinstance(name, str) or not 0 < len(name) <= IFNAME_MAX or "/" in name:
                problems.append(f"{where}: {key} must be an interface name of 1-15 characters")
                continue
            if name in ifnames:
                problems.append(f"{where}: interface {name} is used twice")
            ifnames.add(name)
            names.append(name)
        dirs = []
        for key in ("forward", "reverse"):
            try:
                dirs.append(direction_from_dict(raw.get(key, {})))
            except ValueError as exc:
                problems.append(f"{where}: {key}: {exc}")
        up = raw.get("up", True)
        if not isinstance(up, bool):
            problems.append(f"{where}: up must be true or false")
        if len(names) == 2 and len(dirs) == 2 and isinstance(up, bool):
            links.append(LinkSpec(link_id, names[0], names[1], dirs[0], dirs[1], up))
    if problems:
        raise InputError([Problem(source, 0, 0, p) for p in problems])
    return WireSpec(seed, tuple(links))


def load_spec(path: Path) -> WireSpec:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read wire spec {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from exc
    return parse_spec(data, str(path))
