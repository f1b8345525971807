"""The wire's control protocol: newline-delimited JSON over a Unix stream socket.

Requests (one JSON object per line, one JSON reply line each):
  {"op": "ping"}                                        -> {"ok": true, "pid": N}
  {"op": "set", "link": ID, "forward": {...}, "reverse": {...}}
        partial Direction dicts; fields not given keep their values; "rate_kbit": null = unlimited
                                                        -> {"ok": true, "link": ID, "config": {...}}
  {"op": "up" | "down", "link": ID}                     -> {"ok": true, "link": ID, "up": bool}
  {"op": "stats"}                                       -> {"ok": true, "uptime_s": s, "ring_bytes": n, "links": {...}}
  {"op": "stop"}                                        -> {"ok": true}, then the process exits 0
Any bad request gets {"error": "..."} and the process keeps running.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

from toolkit.errors import RunError
from toolkit.topology.direction import direction_from_dict, direction_to_dict
from toolkit.wire.engine import Engine

MAX_LINE = 1 << 20
# Links per piece of a stats reply. Building and encoding one link's stats costs ~50-100 us, so
# a whole reply for 250 links held the data path for 15-30 ms; in pieces of 8, the server lets
# the data path run between pieces (at most ~1 ms apart).
STATS_PIECE_LINKS = 8


def wants_stats(line: bytes) -> bool:
    """Is this request line a well-formed `stats` request (served in pieces, see stats_pieces)?"""
    try:
        req = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(req, dict) and req.get("op") == "stats"


def stats_pieces(engine: Engine) -> Iterator[bytes]:
    """The stats reply line in pieces of a few links each; joined, they are one JSON object
    {"ok": true, "uptime_s": ..., "ring_bytes": ..., "links": {...}} and a newline. Between two
    pieces the caller lets the data path run; each link's counters are consistent in themselves."""
    head = json.dumps({"ok": True, **engine.stats_header()}, separators=(",", ":"))
    yield (head[:-1] + ',"links":{').encode()
    ids = list(engine.links)
    for start in range(0, len(ids), STATS_PIECE_LINKS):
        parts = [
            json.dumps(link_id) + ":" + json.dumps(engine.link_stats(link_id), separators=(",", ":"))
            for link_id in ids[start : start + STATS_PIECE_LINKS]
        ]
        yield (("," if start else "") + ",".join(parts)).encode()
    yield b"}}\n"


def handle_request(engine: Engine, line: bytes, on_stop: Callable[[], None]) -> dict[str, Any]:
    """Answer one request line. Never raises: every failure becomes {"error": ...}."""
    try:
        req = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return {"error": f"not valid JSON: {exc}"}
    if not isinstance(req, dict):
        return {"error": "a request must be a JSON object"}
    op = req.get("op")
    try:
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "stats":
            reply: dict[str, Any] = json.loads(b"".join(stats_pieces(engine)))
            return reply
        if op == "stop":
            on_stop()
            return {"ok": True}
        link_id = req.get("link")
        if not isinstance(link_id, str):
            return {"error": f"op {op!r} needs a link id (string)"}
        link = engine.link(link_id)
        if op in ("up", "down"):
            engine.set_up(link_id, op == "up")
            return {"ok": True, "link": link_id, "up": op == "up"}
        if op == "set":
            unknown = set(req) - {"op", "link", "forward", "reverse"}
            if unknown:
                return {"error": f"unknown field(s) in set: {', '.join(sorted(unknown))}"}
            fwd_raw, rev_raw = req.get("forward"), req.get("reverse")
            # Check both before changing either, so a bad request changes nothing.
            fwd = None if fwd_raw is None else direction_from_dict(fwd_raw, link.forward.shaper.direction)
            rev = None if rev_raw is None else direction_from_dict(rev_raw, link.reverse.shaper.direction)
            engine.configure(link_id, fwd, rev)
            return {
                "ok": True,
                "link": link_id,
                "config": {
                    "forward": direction_to_dict(link.forward.shaper.direction),
                    "reverse": direction_to_dict(link.reverse.shaper.direction),
                },
            }
        return {"error": f"unknown op {op!r} (ping, set, up, down, stats, stop)"}
    except KeyError as exc:
        return {"error": str(exc.args[0]) if exc.args else "unknown link"}
    except ValueError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # a bug must not take the data plane down
        return {"error": f"internal error: {type(exc).__name__}: {exc}"}


class WireClient:
    """A blocking client for one wire process's control socket (one connection, reused)."""

    def __init__(self, sock_path: str | os.PathLike[str], timeout: float = 5.0):
        self.sock_path = os.fspath(sock_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.sock_path)
            except OSError as exc:
                sock.close()
                raise RunError(f"cannot reach the wire at {self.sock_path}: {exc}") from exc
            self._sock = sock
            self._buf = b""
        return self._sock

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return the reply; raises RunError on an error reply."""
        reply = self.request_raw(json.dumps(req).encode())
        if "error" in reply:
            raise RunError(f"wire {req.get('op')} failed: {reply['error']}")
        return reply

    def request_raw(self, line: bytes) -> dict[str, Any]:
        """Send one raw line (no newline) and return the decoded reply, error replies included."""
        sock = self._connect()
        try:
            sock.sendall(line + b"\n")
            while b"\n" not in self._buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RunError(f"the wire at {self.sock_path} closed the connection")
                self._buf += chunk
        except OSError as exc:
            self.close()
            raise RunError(f"wire control at {self.sock_path} failed: {exc}") from exc
        reply_line, _, self._buf = self._buf.partition(b"\n")
        reply = json.loads(reply_line)
        assert isinstance(reply, dict)
        return reply

    def ping(self) -> dict[str, Any]:
        return self.request({"op": "ping"})

    def set_link(
        self,
        link_id: str,
        forward: dict[str, Any] | None = None,
        reverse: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        req: dict[str, Any] = {"op": "set", "link": link_id}
        if forward is not None:
            req["forward"] = forward
        if reverse is not None:
            req["reverse"] = reverse
        return self.request(req)

    def set_up(self, link_id: str, up: bool) -> dict[str, Any]:
        return self.request({"op": "up" if up else "down", "link": link_id})

    def stats(self) -> dict[str, Any]:
        return self.request({"op": "stats"})

    def stop(self) -> None:
        try:
            self.request({"op": "stop"})
        finally:
            self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
