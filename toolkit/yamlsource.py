"""YAML (and JSON) read with the line and column of every key and value.

PyYAML's loaders keep the last of two equal mapping keys and forget positions; cnlab reports
mistakes as `file:line:col`, so it composes the node tree itself and records both. Duplicate
keys are reported as problems (the first value is kept) rather than silently overwritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, Problem

Path_ = tuple[Any, ...]  # a path into the document: keys and list indexes

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster


class _Loader(_Base):  # type: ignore[misc]
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read `on: all` as `True: all`."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class Document:
    """Plain data loaded from a file, with positions to report problems at."""

    file: str
    data: Any
    value_pos: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    key_pos: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def position(self, path: Path_, *, at_key: bool = False) -> tuple[int, int]:
        """Where `path` is written; the nearest enclosing place that exists if it is absent."""
        path = tuple(path)
        while True:
            table = self.key_pos if at_key else self.value_pos
            if path in table:
                return table[path]
            if at_key and path in self.value_pos:
                return self.value_pos[path]
            if not path:
                return (1, 1)
            path = path[:-1]
            at_key = True

    def problem(self, path: Path_, message: str, *, at_key: bool = False) -> Problem:
        line, col = self.position(path, at_key=at_key)
        return Problem(self.file, line, col, message)


def _pos(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _build(loader: Any, node: yaml.Node, path: Path_, doc: Document) -> Any:
    doc.value_pos[path] = _pos(node)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                doc.problems.append(
                    Problem(doc.file, *_pos(key_node), "YAML merge keys ('<<') are not supported; write the keys out")
                )
                continue
            key = _build(loader, key_node, path + ("<key>",), doc)
            if isinstance(key, (dict, list)):
                doc.problems.append(Problem(doc.file, *_pos(key_node), "a mapping key must be a plain value"))
                continue
            if key in result:
                first = doc.key_pos[path + (key,)]
                doc.problems.append(
                    Problem(
                        doc.file,
                        *_pos(key_node),
                        f"duplicate key '{key}' (first defined at line {first[0]}); a key may appear once in a mapping",
                    )
                )
                continue
            doc.key_pos[path + (key,)] = _pos(key_node)
            result[key] = _build(loader, value_node, path + (key,), doc)
        doc.value_pos.pop(path + ("<key>",), None)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, path + (i,), doc) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_text(text: str, file: str) -> Document:
    """Parse YAML (JSON is accepted too). Syntax errors raise InputError at their position."""
    doc = Document(file=file, data=None)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc.data = None if node is None else _build(loader, node, (), doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise InputError([Problem(file, line, col, f"not valid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise InputError([Problem(file, 0, 0, f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return doc


def load_file(path: str | Path) -> Document:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError([Problem(str(path), 0, 0, "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Problem(str(path), 0, 0, f"cannot read: {exc}")]) from None
    return load_text(text, str(path))
