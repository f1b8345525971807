"""The package's layering, checked on the source: only the CLI imports typer and rich, and the
wire imports nothing of the toolkit but the topology model, the errors and the targets (where a
command runs; they import only the errors)."""

from __future__ import annotations

import ast
from pathlib import Path

TOOLKIT = Path(__file__).resolve().parent.parent / "toolkit"


def imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(TOOLKIT.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return found


def test_only_the_cli_imports_typer_and_rich():
    offenders = {}
    for path in TOOLKIT.rglob("*.py"):
        if path.is_relative_to(TOOLKIT / "cli"):
            continue
        bad = {m for m in imports(path) if m.split(".")[0] in ("typer", "rich")}
        if bad:
            offenders[str(path.relative_to(TOOLKIT))] = sorted(bad)
    assert offenders == {}


def test_the_wire_imports_only_the_topology_model_errors_and_targets():
    allowed = (
        "toolkit.wire",
        "toolkit.errors",
        "toolkit.topology.model",
        "toolkit.topology.direction",
        "toolkit.targets",
    )
    offenders = {}
    for path in (TOOLKIT / "wire").rglob("*.py"):
        bad = {m for m in imports(path) if m.startswith("toolkit") and m != "toolkit" and not m.startswith(allowed)}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}
    assert imports(TOOLKIT / "testbed" / "plan.py") >= {"toolkit.wire.spec"}  # the check sees imports


def test_the_targets_import_only_the_errors():
    offenders = {}
    for path in (TOOLKIT / "targets").rglob("*.py"):
        bad = {
            m
            for m in imports(path)
            if m.startswith("toolkit") and m != "toolkit" and not m.startswith(("toolkit.targets", "toolkit.errors"))
        }
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}
