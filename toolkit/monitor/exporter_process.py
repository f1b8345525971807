"""Starting and stopping the wire exporter process (`python -m toolkit.monitor.wire_exporter`)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import RunError
from ..testbed.executor import process_record
from .prometheus import Journal, _proc_start, _tail, running


@dataclass
class ExporterProcess:
    pid: int
    start_time: int | None
    address: str  # host:port it serves /metrics on
    info_path: Path

    @classmethod
    def start(
        cls,
        sockets: Sequence[str],
        info_path: Path,
        log_path: Path,
        *,
        host: str = "127.0.0.1",
        journal: Journal | None = None,
        timeout_s: float = 20.0,
    ) -> ExporterProcess:
        argv = [sys.executable, "-m", "toolkit.monitor.wire_exporter", "--listen", f"{host}:0"]
        for s in sockets:
            argv += ["--socket", str(s)]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        start = _proc_start(proc.pid)
        if journal is not None:
            journal([process_record(proc.pid, "wire-exporter")])
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        out = b""
        while b"\n" not in out:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                proc.kill()
                proc.wait(timeout=5)
                raise RunError(f"the wire exporter did not start; log {log_path}:\n{_tail(log_path)}")
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                out += chunk
        proc.stdout.close()
        word, _, port = out.split(b"\n", 1)[0].decode().partition(" ")
        if word != "ready" or not port.isdigit():
            proc.kill()
            raise RunError(f"the wire exporter printed {out!r} instead of 'ready PORT'")
        exp = cls(proc.pid, start, f"{host}:{port}", info_path)
        info_path.write_text(json.dumps({"pid": exp.pid, "start": start, "address": exp.address}) + "\n")
        return exp

    @classmethod
    def open(cls, info_path: Path) -> ExporterProcess | None:
        try:
            d = json.loads(info_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return cls(int(d["pid"]), d.get("start"), d["address"], info_path)

    def alive(self) -> bool:
        return running(self.pid, self.start_time)

    def stop(self, grace_s: float = 5.0) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and self.alive():
                time.sleep(0.05)
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
                while self.alive():
                    time.sleep(0.05)
        self.info_path.unlink(missing_ok=True)
