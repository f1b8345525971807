"""A second node image for the tests: its own render hook and a key hook, nothing from p2pvalue.
It shows that the deployer needs only an image.yaml with the same fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def render(values: dict[str, Any], *, check: bool = True) -> str:
    if check and not values["domain"]:
        raise ValueError("domain: empty")
    return json.dumps(
        {"name": values["domain"], "peers": [p["domain"] for p in values["trusted_peers"]], "listen": values["listen"]},
        sort_keys=True,
    )


def ensure_key(path: Path) -> str:
    return "key-of-" + Path(path).parent.name
