"""The state of live testbeds on this machine: one directory per testbed.

Layout of `$CNLAB_STATE_DIR` (default `/run/cnlab/testbeds`):

    <id>/
      meta.json         id, topology, shaper, routing, phase (creating|up|failed|removing), pid of
                        `up`, times, route convergence time
      plan.json         the plan `up` applied (TestbedPlan.to_json())
      resources.jsonl   the journal: one JSON object per resource, appended and fsync'ed BEFORE the
                        resource is created; `down` removes exactly these
      links.json        run-time link state (directions, up/down, partition)
      lock              flock'ed by anyone changing the testbed
      wire-<k>.json|.sock|.log   wire processes' spec, control socket, log
      babeld/           babeld configs, pid files and logs (routing: babeld)

The directory is created with mkdir (atomic), so an id is taken by exactly one `up`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import InputError
from .steps import Resource

DEFAULT_STATE_DIR = "/run/cnlab/testbeds"


def state_root() -> Path:
    return Path(os.environ.get("CNLAB_STATE_DIR") or DEFAULT_STATE_DIR)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TestbedState:
    """One testbed's state directory."""

    __test__ = False  # not a pytest class

    def __init__(self, testbed_id: str, root: Path | None = None):
        self.id = testbed_id
        self.dir = (root or state_root()) / testbed_id

    # ---- lifecycle -----------------------------------------------------------------------------
    def create(self) -> None:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.dir.mkdir()
        except FileExistsError:
            raise InputError(
                f"testbed id {self.id!r} is already in use (state in {self.dir}); "
                f"pick another --id or run `cnlab down {self.id}`"
            ) from None
        (self.dir / "resources.jsonl").touch()

    @property
    def exists(self) -> bool:
        return self.dir.is_dir()

    def remove(self) -> None:
        for p in sorted(self.dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink(missing_ok=True)
        self.dir.rmdir()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with open(self.dir / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- journal -------------------------------------------------------------------------------
    def record(self, resources: list[Resource] | list[dict[str, Any]]) -> None:
        """Append resources to the journal and fsync, before they are created."""
        if not resources:
            return
        rows = [r if isinstance(r, dict) else asdict(r) for r in resources]
        with open(self.dir / "resources.jsonl", "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def resources(self) -> list[dict[str, Any]]:
        path = self.dir / "resources.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash: its resource was never created
        return out

    # ---- documents -----------------------------------------------------------------------------
    def read(self, name: str, default: object = None) -> object:
        try:
            return json.loads((self.dir / name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return default

    def write(self, name: str, data: object) -> None:
        _write_json(self.dir / name, data)

    def write_text(self, name: str, text: str) -> None:
        path = self.dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.read("meta.json", {})
        return meta if isinstance(meta, dict) else {}

    def update_meta(self, **fields: object) -> None:
        meta = self.meta
        meta.update(fields, updated=time.time())
        self.write("meta.json", meta)


def live_ids(root: Path | None = None) -> list[str]:
    base = root or state_root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir())
