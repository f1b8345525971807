"""Fixtures for the node tests: real node processes (see p2pvalue_node.testing).

Every process a test starts is stopped (SIGTERM, then SIGKILL, by pid) at teardown, also when the test
fails; temporary directories come from pytest's tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from p2pvalue_node.testing import LocalNode, make_nodes


@pytest.fixture
def nodes_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[LocalNode] = []

    def factory(count: int, start: bool = True, **settings: Any) -> list[LocalNode]:
        specs = make_nodes(tmp_path / f"fed{len(started)}", count, **settings)
        started.extend(specs)
        if start:
            for s in specs:
                s.start()
        return specs

    yield factory
    for s in started:
        s.stop()


@pytest.fixture
def node(nodes_factory: Any) -> LocalNode:
    (n,) = nodes_factory(1)
    n.add_user("alice")
    n.add_user("bob")
    n.add_user("carol")
    return n
