"""The run's operation history, as Jepsen keeps it: an `invoke` line when an operation starts and
one `ok`, `fail` (it certainly did not happen) or `info` (unknown: a timeout or a lost connection)
line when it ends. Times are seconds since the workload started. Written as JSON lines while the
run goes, so an interrupted run keeps what happened."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass
class Op:
    """One completed operation (the pair of history lines), as the accounting reads it."""

    seq: int
    kind: str
    user: str
    node: str
    object: str
    uid: str | None
    invoke_t: float
    type: str = "invoke"  # ok, fail, info once completed
    end_t: float | None = None
    error: str | None = None
    warmup: bool = False

    @property
    def latency_s(self) -> float | None:
        return None if self.end_t is None else self.end_t - self.invoke_t


@dataclass
class History:
    t0: float  # wall-clock time of the workload start
    warmup_s: float = 0.0
    path: Path | None = None
    ops: list[Op] = field(default_factory=list)
    _file: IO[str] | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self._file = open(self.path, "a", encoding="utf-8", buffering=1)

    def now(self) -> float:
        return time.time() - self.t0

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, sort_keys=True) + "\n")

    def invoke(self, seq: int, kind: str, user: str, node: str, obj: str, uid: str | None) -> Op:
        t = self.now()
        op = Op(seq, kind, user, node, obj, uid, t, warmup=t < self.warmup_s)
        self.ops.append(op)
        self._write(
            {
                "type": "invoke",
                "t": round(t, 6),
                "seq": seq,
                "op": kind,
                "user": user,
                "node": node,
                "object": obj,
                "uid": uid,
            }
        )
        return op

    def complete(self, op: Op, kind: str, error: str | None = None) -> None:
        op.type, op.end_t, op.error = kind, self.now(), error
        record = {
            "type": kind,
            "t": round(op.end_t, 6),
            "seq": op.seq,
            "op": op.kind,
            "latency_s": round(op.end_t - op.invoke_t, 6),
        }
        if error:
            record["error"] = error[:300]
        self._write(record)

    def note(self, **record: Any) -> None:
        """An `info` line that is not an operation (setup, an observer losing its connection)."""
        self._write({"type": "note", "t": round(self.now(), 6), **record})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_history(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
