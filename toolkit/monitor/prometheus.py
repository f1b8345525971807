"""A real Prometheus server for one testbed (or run): config, file-based targets, lifecycle.

    mon = Prometheus.start(Path(state_dir) / "monitor", targets, testbed="tb1", journal=state.record)
    mon.set_targets(more_targets)        # rewrites targets/<job>.json atomically (file_sd reloads)
    mon.url                              # http://127.0.0.1:PORT
    mon.stop(keep_tsdb=Path("kept"))     # SIGTERM, wait, optionally move the TSDB out

The directory holds `prometheus.yml` (rendered from `monitoring/prometheus.yml.j2`), `targets/`
(one file_sd JSON file per job), `web/` (the rules and consoles it serves, see write_web_files),
`tsdb/`, `prometheus.log` and `monitor.json` (pid, process start time, url, ...), so `Prometheus.open(dir)` finds a running server again from another process.

Callers pass typed targets (`ScrapeTarget(job, address, labels)`); this module does not know
where they come from (the deployer's nodes, the wire exporter, a test's local nodes).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, RunError
from ..testbed.executor import process_record

REPO = Path(__file__).resolve().parents[2]
MONITORING_DIR = REPO / "monitoring"
DEFAULT_BIN = "/usr/bin/prometheus"
DEFAULT_SCRAPE_INTERVAL_S = 1.0
STOP_GRACE_S = 20.0

Journal = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class ScrapeTarget:
    """One thing Prometheus scrapes: its job, `host:port`, and labels (e.g. device, domain, site)."""

    job: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.job or not self.job.replace("_", "").replace("-", "").isalnum():
            raise InputError(f"scrape job {self.job!r}: use letters, digits, '-' and '_'")
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InputError(f"scrape target {self.address!r} of job {self.job}: use HOST:PORT")
        for k in self.labels:
            if not k.replace("_", "").isalnum() or k.startswith("__"):
                raise InputError(f"scrape target {self.address}: label name {k!r} is not allowed")


def prometheus_bin() -> str:
    """PROMETHEUS_BIN or Debian's /usr/bin/prometheus; a RunError naming the package if missing."""
    path = os.environ.get("PROMETHEUS_BIN") or DEFAULT_BIN
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        found = shutil.which("prometheus") if not os.environ.get("PROMETHEUS_BIN") else None
        if found:
            return found
        raise RunError(
            f"Prometheus is not installed ({path} not found): apt-get install prometheus "
            "(or `cnlab doctor --fix`), or set PROMETHEUS_BIN to the binary"
        )
    return path


def promtool_bin() -> str:
    sibling = Path(prometheus_bin()).with_name("promtool")
    if sibling.exists():
        return str(sibling)
    found = shutil.which("promtool")
    if not found:
        raise RunError("promtool is not installed: apt-get install prometheus")
    return found


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def file_sd(targets: Iterable[ScrapeTarget]) -> list[dict[str, Any]]:
    """The file_sd document of one job's targets (one group per target, sorted by address)."""
    return [
        {"targets": [t.address], "labels": dict(sorted(t.labels.items()))}
        for t in sorted(targets, key=lambda t: t.address)
    ]


def rule_files(monitoring_dir: Path = MONITORING_DIR) -> list[str]:
    return sorted(str(p) for p in (monitoring_dir / "rules").glob("*.yml"))


# The rules and consoles are written for 1 s scrapes (rates over [15s]). A rate needs two samples in
# its range, and three scrape intervals always hold two, so a server scraping less often gets copies
# whose ranges are widened to RANGE_INTERVALS of its longest interval.
RANGE_INTERVALS = 3
_RANGE = re.compile(r"\[(\d+)s\]")
WEB_FILES = (("rules", "*.yml"), ("consoles", "*.html"), ("console_libraries", "*.lib"))


def min_range_s(scrape_interval_s: float, job_intervals_s: Mapping[str, float] | None = None) -> int:
    """The shortest PromQL range that holds two samples of every job."""
    return math.ceil(RANGE_INTERVALS * max([scrape_interval_s, *(job_intervals_s or {}).values()]))


def widen_ranges(text: str, range_s: int) -> str:
    """Every `[Ns]` range selector in the text widened to at least range_s seconds (pure)."""
    return _RANGE.sub(lambda m: f"[{max(int(m.group(1)), range_s)}s]", text)


def write_web_files(dest: Path, range_s: int, monitoring_dir: Path = MONITORING_DIR) -> None:
    """One server's rules, consoles and console library: monitoring/'s, ranges widened to range_s."""
    for sub, pattern in WEB_FILES:
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for src in sorted((monitoring_dir / sub).glob(pattern)):
            _atomic_write(dest / sub / src.name, widen_ranges(src.read_text(), range_s))


def render_config(
    *,
    listen: str,
    targets_dir: Path,
    jobs: Iterable[str],
    testbed: str,
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    job_intervals_s: Mapping[str, float] | None = None,
    rules: Iterable[str] | None = None,
    monitoring_dir: Path = MONITORING_DIR,
) -> str:
    """prometheus.yml from monitoring/prometheus.yml.j2 (pure: no file is written).
    job_intervals_s: jobs scraped less often than the global interval (e.g. a big wire)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(monitoring_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    interval = _fmt_s(scrape_interval_s)
    return env.get_template("prometheus.yml.j2").render(
        listen=listen,
        targets_dir=str(targets_dir),
        jobs=sorted(set(jobs)),
        testbed=testbed,
        scrape_interval=interval,
        evaluation_interval=interval,
        scrape_timeout=_fmt_s(min(scrape_interval_s * 0.9, 10.0)),
        job_intervals={
            job: {"interval": _fmt_s(i), "timeout": _fmt_s(min(i * 0.9, 10.0))}
            for job, i in (job_intervals_s or {}).items()
        },
        rule_files=list(rule_files(monitoring_dir) if rules is None else rules),
    )


def _fmt_s(seconds: float) -> str:
    """A Prometheus duration: whole seconds as "5s", anything else in milliseconds ("900ms")."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def _proc_start(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def keep_tsdb_dir(tsdb: Path, dest: Path) -> None:
    """Move a (stopped) server's TSDB to dest, which must not exist yet."""
    if Path(dest).exists():
        raise InputError(f"--keep-tsdb {dest}: it exists already; name a new directory")
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tsdb), str(dest))


def running(pid: int, start_time: int | None) -> bool:
    """Whether process pid still is the one that started at start_time (and not a zombie)."""
    if start_time is None or _proc_start(pid) != start_time:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Prometheus:
    """A Prometheus server started by cnlab, described by `dir/monitor.json`."""

    dir: Path
    pid: int
    start_time: int | None
    host: str
    port: int
    testbed: str
    scrape_interval_s: float
    jobs: list[str]
    started_at: float = 0.0  # unix time the server was started
    job_intervals_s: dict[str, float] = field(default_factory=dict)  # jobs scraped less often

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def tsdb(self) -> Path:
        return self.dir / "tsdb"

    @property
    def targets_dir(self) -> Path:
        return self.dir / "targets"

    @property
    def web_dir(self) -> Path:
        """This server's rules, consoles and console library (see write_web_files)."""
        return self.dir / "web"

    @property
    def config_path(self) -> Path:
        return self.dir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.dir / "prometheus.log"

    # ---- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        directory: Path,
        targets: Iterable[ScrapeTarget],
        *,
        testbed: str,
        host: str = "127.0.0.1",
        scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
        journal: Journal | None = None,
        timeout_s: float = 60.0,
        extra_jobs: Iterable[str] = (),
        retention: str = "30d",
        job_intervals_s: Mapping[str, float] | None = None,
    ) -> Prometheus:
        """Start Prometheus in `directory` and wait until it is ready. `journal` gets the process
        record (kind "process", with its start time) as soon as the process exists."""
        if scrape_interval_s <= 0:
            raise InputError(f"scrape interval {scrape_interval_s} s: must be > 0")
        binary = prometheus_bin()
        directory = Path(directory)
        existing = cls.open(directory)
        if existing is not None and existing.alive():
            raise RunError(f"Prometheus already runs for {testbed} at {existing.url} (pid {existing.pid})")
        targets = list(targets)
        jobs = sorted({t.job for t in targets} | set(extra_jobs))
        (directory / "targets").mkdir(parents=True, exist_ok=True)
        (directory / "tsdb").mkdir(exist_ok=True)
        for _attempt in range(3):  # a free port can be taken between choosing and binding it
            port = free_port(host)
            mon = cls(
                directory,
                0,
                None,
                host,
                port,
                testbed,
                scrape_interval_s,
                jobs,
                time.time(),
                dict(job_intervals_s or {}),
            )
            mon._write_targets(targets, jobs)
            write_web_files(mon.web_dir, min_range_s(scrape_interval_s, job_intervals_s))
            _atomic_write(mon.config_path, mon._render())
            argv = [
                binary,
                f"--config.file={mon.config_path}",
                f"--storage.tsdb.path={mon.tsdb}",
                f"--storage.tsdb.retention.time={retention}",
                f"--web.listen-address={host}:{port}",
                "--web.enable-lifecycle",
                f"--web.console.templates={mon.web_dir / 'consoles'}",
                f"--web.console.libraries={mon.web_dir / 'console_libraries'}",
                "--log.level=warn",
            ]
            with open(mon.log_path, "ab") as log:
                proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            mon.pid, mon.start_time = proc.pid, _proc_start(proc.pid)
            if journal is not None:
                journal([process_record(proc.pid, "prometheus")])
            mon._save()
            try:
                mon._wait_ready(proc, timeout_s)
                return mon
            except _PortTaken:
                continue
            except BaseException:
                mon.stop()
                raise
        raise RunError(f"Prometheus could not bind a free port on {host} after 3 attempts; log {mon.log_path}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            code = proc.poll()
            if code is not None:
                tail = _tail(self.log_path)
                if "address already in use" in tail:
                    raise _PortTaken()
                raise RunError(f"Prometheus exited with {code} before it was ready; log {self.log_path}:\n{tail}")
            try:
                status, _ = _http_get(f"{self.url}/-/ready", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RunError(
                    f"Prometheus (pid {self.pid}) not ready after {timeout_s:.0f} s; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    @classmethod
    def open(cls, directory: Path) -> Prometheus | None:
        """The server described by directory/monitor.json (None if there is none)."""
        try:
            data = json.loads((Path(directory) / "monitor.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return cls(
            Path(directory),
            int(data["pid"]),
            data.get("start"),
            data["host"],
            int(data["port"]),
            data["testbed"],
            float(data["scrape_interval_s"]),
            list(data["jobs"]),
            float(data.get("started_at", 0.0)),
            dict(data.get("job_intervals_s", {})),
        )

    def _render(self) -> str:
        return render_config(
            listen=f"{self.host}:{self.port}",
            targets_dir=self.targets_dir,
            jobs=self.jobs,
            testbed=self.testbed,
            scrape_interval_s=self.scrape_interval_s,
            job_intervals_s=self.job_intervals_s,
            rules=rule_files(self.web_dir),
        )

    def _save(self) -> None:
        _atomic_write(
            self.dir / "monitor.json",
            json.dumps(
                {
                    "pid": self.pid,
                    "start": self.start_time,
                    "host": self.host,
                    "port": self.port,
                    "url": self.url,
                    "testbed": self.testbed,
                    "scrape_interval_s": self.scrape_interval_s,
                    "jobs": self.jobs,
                    "tsdb": str(self.tsdb),
                    "started_at": self.started_at,
                    "job_intervals_s": self.job_intervals_s,
                },
                indent=1,
            ),
        )

    def alive(self) -> bool:
        """Whether our process (same pid and start time) is still running."""
        return running(self.pid, self.start_time)

    def stop(self, keep_tsdb: Path | None = None, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (Prometheus flushes and closes its TSDB), SIGKILL after grace_s. With
        keep_tsdb, the TSDB directory is moved there (it must not exist yet)."""
        if keep_tsdb is not None and Path(keep_tsdb).exists():
            raise InputError(f"--keep-tsdb {keep_tsdb}: it exists already; name a new directory")
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
                while self.alive():
                    time.sleep(0.05)
        if keep_tsdb is not None and self.tsdb.exists():
            keep_tsdb_dir(self.tsdb, keep_tsdb)
        (self.dir / "monitor.json").unlink(missing_ok=True)

    # ---- targets -------------------------------------------------------------------------------
    def _write_targets(self, targets: list[ScrapeTarget], jobs: Iterable[str]) -> None:
        by_job: dict[str, list[ScrapeTarget]] = {j: [] for j in jobs}
        for t in targets:
            by_job.setdefault(t.job, []).append(t)
        for job, group in by_job.items():
            _atomic_write(self.targets_dir / f"{job}.json", json.dumps(file_sd(group), indent=1) + "\n")

    def set_targets(self, targets: Iterable[ScrapeTarget], jobs: Iterable[str] | None = None) -> None:
        """Replace the targets of the given jobs (default: the jobs present in `targets`); other
        jobs keep theirs. A job new to this server re-renders the config and reloads it."""
        targets = list(targets)
        touched = sorted(set(jobs) if jobs is not None else {t.job for t in targets})
        self._write_targets(targets, touched)
        new = sorted(set(touched) - set(self.jobs))
        if new:
            self.jobs = sorted(set(self.jobs) | set(new))
            _atomic_write(self.config_path, self._render())
            self._save()
            self.reload()

    def targets(self) -> list[ScrapeTarget]:
        """The targets in the file_sd files now."""
        out = []
        for job in self.jobs:
            try:
                groups = json.loads((self.targets_dir / f"{job}.json").read_text())
            except FileNotFoundError:
                continue
            for g in groups:
                out += [ScrapeTarget(job, a, g.get("labels", {})) for a in g["targets"]]
        return out

    def reload(self) -> None:
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                resp.read()
        except (urllib.error.URLError, OSError) as e:
            raise RunError(f"Prometheus at {self.url} did not reload its config: {e}") from e

    # ---- queries -------------------------------------------------------------------------------
    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; returns `data`, raises RunError on an error reply."""
        return api_get(self.url, path, **params)


class _PortTaken(Exception):
    pass


def api_get(url: str, path: str, timeout: float = 30.0, **params: Any) -> Any:
    """GET {url}/api/v1/{path}?params and return its `data` (RunError on failure)."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    full = f"{url.rstrip('/')}/api/v1/{path}" + (f"?{query}" if query else "")
    try:
        status, body = _http_get(full, timeout=timeout)
    except OSError as e:
        raise RunError(f"Prometheus at {url} is not reachable: {e}") from e
    try:
        doc = json.loads(body)
    except json.JSONDecodeError:
        raise RunError(f"Prometheus {path}: HTTP {status}, not JSON: {body[:200]!r}") from None
    if doc.get("status") != "success":
        raise RunError(f"Prometheus {path} {params}: {doc.get('errorType')}: {doc.get('error')}")
    return doc["data"]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty log)"
    except OSError:
        return "(no log)"
