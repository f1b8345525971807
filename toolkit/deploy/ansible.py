"""The Ansible deployer: runs playbooks/site.yml (or upgrade.yml) through ansible-runner.

    result = AnsibleDeployer(testbed).deploy(progress=cb)     # cnlab deploy ID

- Host keys first: every device's key is checked with paramiko against the testbed's known_hosts
  and pinned fingerprints (learned on first contact); Ansible's OpenSSH then trusts exactly that
  file (StrictHostKeyChecking=yes). A changed key stops the deploy naming the device.
- A fresh private data directory per run (runs sharing one collide), removed afterwards;
  `suppress_env_files` so runner writes no env/ files. The inventory in it holds no secret:
  keys and tokens are controller files the role copies with no_log.
- The event handler only counts and calls the progress callback, and returns True (otherwise
  runner keeps no events or stats); a failure names host, task and message.
- Rolling upgrade: when the artifact's version differs from the deployed one (or `rolling=True`),
  upgrade.yml runs with serial [1, 10 %, 25 %], max_fail_percentage 0 and a federation health
  check after every batch.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..images.wheelhouse import Artifact
from ..targets.ssh import KnownHosts, for_each, scan_host_key
from .inventory import PLAYBOOKS, AnsibleHost, ArtifactRef, build_inventory, inventory_yaml

# (host or "", task name, status: start|ok|changed|failed|skipped|unreachable|retry)
Progress = Callable[[str, str, str], None]
STATE_FILE = "ansible.json"


@dataclass
class HostSummary:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0


@dataclass
class Failure:
    host: str
    task: str
    message: str

    def __str__(self) -> str:
        return f"{self.host}: task '{self.task}': {self.message}"


@dataclass
class RunResult:
    playbook: str
    status: str  # runner's: successful | failed | timeout | canceled
    rc: int
    duration_s: float
    hosts: dict[str, HostSummary] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    private_data_dir: str | None = None  # kept only when asked

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0 and not self.failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["changed"] = self.changed
        return d


@dataclass(frozen=True)
class RunOptions:
    strategy: str = "linear"  # linear | free
    pipelining: bool = True
    forks: int = 20
    mitogen: bool = False
    keep_private_data_dir: bool = False
    timeout_s: int = 1800


class EventCounter:
    """ansible-runner's event handler: cheap (no I/O), never blocks, returns True."""

    def __init__(self, progress: Progress | None):
        self.progress = progress or (lambda host, task, status: None)
        self.hosts: dict[str, HostSummary] = {}
        self.failures: list[Failure] = []
        self.task = ""

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host") or ""
        if kind == "playbook_on_task_start":
            self.task = data.get("task") or data.get("name") or ""
            self.progress("", self.task, "start")
            return True
        status = {
            "runner_on_ok": "ok",
            "runner_on_failed": "failed",
            "runner_on_skipped": "skipped",
            "runner_on_unreachable": "unreachable",
            "runner_retry": "retry",
        }.get(kind)
        if status is None or not host:
            return True
        task = data.get("task") or self.task
        res = data.get("res") or {}
        summary = self.hosts.setdefault(host, HostSummary())
        if status == "ok" and res.get("changed") is True:
            status = "changed"
        if status == "failed" and data.get("ignore_errors"):
            status = "ok"
        if status in ("failed", "unreachable"):
            self.failures.append(Failure(host, task, _message(res)))
        if status != "retry":
            setattr(summary, status, getattr(summary, status) + 1)
            if status == "changed":
                summary.ok += 1
        self.progress(host, task, status)
        return True


def _message(res: dict[str, Any]) -> str:
    if res.get("censored"):
        return str(res["censored"])
    for key in ("msg", "stderr", "module_stderr", "stdout"):
        text = res.get(key)
        if text:
            lines = str(text).strip().splitlines()
            return " | ".join(lines[-5:])[:1000]
    return "failed (no message)"


def _envvars(opts: RunOptions, tmp: Path) -> dict[str, str]:
    env = {
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True" if opts.pipelining else "False",
        "ANSIBLE_STRATEGY": opts.strategy,
        "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles"),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"),
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_TIMEOUT": "30",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    if opts.mitogen:
        import ansible_mitogen  # type: ignore[import-not-found,import-untyped,unused-ignore]

        env["ANSIBLE_STRATEGY_PLUGINS"] = str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy")
        env["ANSIBLE_STRATEGY"] = f"mitogen_{opts.strategy}"
    return env


def run_playbook(
    playbook: Path, inventory_text: str, *, opts: RunOptions = RunOptions(), progress: Progress | None = None
) -> RunResult:
    """One ansible-runner run in a fresh private data directory (removed unless kept)."""
    import ansible_runner

    venv_bin = str(Path(sys.executable).parent)
    if shutil.which("ansible-playbook") is None:  # runner looks it up on this process's PATH
        os.environ["PATH"] = f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    tmp = Path(tempfile.mkdtemp(prefix="cnlab-ansible-"))
    os.chmod(tmp, 0o700)
    counter = EventCounter(progress)
    t0 = time.monotonic()
    try:
        inv = tmp / "inventory" / "hosts.yml"
        inv.parent.mkdir()
        inv.write_text(inventory_text)
        runner = ansible_runner.run(
            private_data_dir=str(tmp),
            playbook=str(playbook),
            inventory=str(inv),
            envvars=_envvars(opts, tmp),
            suppress_env_files=True,
            forks=opts.forks,
            quiet=True,
            event_handler=counter,
            timeout=opts.timeout_s,
            ident="run",
        )
        status, rc = runner.status, int(runner.rc if runner.rc is not None else 1)
        hosts = stats_summary(runner.stats) or counter.hosts  # the play's own recap (counts no_log tasks)
        if status != "successful" and not counter.failures:
            tail = " | ".join(runner.stdout.read().strip().splitlines()[-8:]) if runner.stdout else ""
            counter.failures.append(Failure("-", "-", f"ansible-playbook ended {status} (rc {rc}): {tail}"))
    finally:
        kept = str(tmp) if opts.keep_private_data_dir else None
        if kept is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return RunResult(
        playbook=playbook.name,
        status=status,
        rc=rc,
        duration_s=round(time.monotonic() - t0, 2),
        hosts=hosts,
        failures=counter.failures,
        private_data_dir=kept,
    )


def stats_summary(stats: dict[str, dict[str, int]] | None) -> dict[str, HostSummary]:
    """runner.stats (the PLAY RECAP) per host."""
    if not stats:
        return {}
    hosts = set().union(*(v.keys() for v in stats.values() if isinstance(v, dict)))
    return {
        h: HostSummary(
            ok=stats.get("ok", {}).get(h, 0),
            changed=stats.get("changed", {}).get(h, 0),
            failed=stats.get("failures", {}).get(h, 0),
            skipped=stats.get("skipped", {}).get(h, 0),
            unreachable=stats.get("dark", {}).get(h, 0),
        )
        for h in sorted(hosts)
        if h != "localhost"
    }


def check_host_keys(hosts: list[AnsibleHost], known_hosts: str, max_parallel: int = 10) -> None:
    """Check (or learn on first contact) every device's host key before Ansible connects."""
    known = KnownHosts(known_hosts)
    errors = [
        str(r)
        for _, r in for_each([h.endpoint for h in hosts], lambda ep: scan_host_key(ep, known), max_parallel)
        if isinstance(r, BaseException)
    ]
    if errors:
        raise RunError("host key check failed, nothing deployed:\n  " + "\n  ".join(errors))


@dataclass
class DeployOutcome:
    result: RunResult
    rolling: bool
    version: str
    previous_version: str | None


class AnsibleDeployer:
    """Deploys the nodes of a set of Ansible hosts; state (deployed version) in `state_dir`."""

    def __init__(
        self, hosts: list[AnsibleHost], *, state_dir: str, known_hosts: str, render: Callable[[dict[str, Any]], str]
    ):
        self.hosts = hosts
        self.state_dir = Path(state_dir)
        self.known_hosts = known_hosts
        self.render = render

    def inventory(
        self, artifact: Artifact | ArtifactRef, node_exporter: bool = False, pipelining: bool = True
    ) -> dict[str, Any]:
        ref = ArtifactRef(path=artifact.path, version=artifact.version, distribution=artifact.distribution)
        return build_inventory(
            self.hosts,
            artifact=ref,
            known_hosts=self.known_hosts,
            render=self.render,
            node_exporter=node_exporter,
            pipelining=pipelining,
        )

    def deployed_version(self) -> str | None:
        import json

        try:
            version = json.loads((self.state_dir / STATE_FILE).read_text()).get("version")
            return None if version is None else str(version)
        except (FileNotFoundError, ValueError):
            return None

    def deploy(
        self,
        artifact: Artifact | ArtifactRef,
        *,
        rolling: bool | None = None,
        node_exporter: bool = False,
        opts: RunOptions = RunOptions(),
        progress: Progress | None = None,
    ) -> DeployOutcome:
        import json

        check_host_keys(self.hosts, self.known_hosts)
        previous = self.deployed_version()
        if rolling is None:
            rolling = previous is not None and previous != artifact.version
        playbook = PLAYBOOKS / ("upgrade.yml" if rolling else "site.yml")
        text = inventory_yaml(self.inventory(artifact, node_exporter, opts.pipelining))
        result = run_playbook(playbook, text, opts=opts, progress=progress)
        if result.ok:
            (self.state_dir / STATE_FILE).write_text(
                json.dumps(
                    {
                        "version": artifact.version,
                        "artifact": artifact.path,
                        "distribution": artifact.distribution,
                        "hosts": sorted(h.name for h in self.hosts),
                        "deployed": time.time(),
                    }
                )
                + "\n"
            )
        return DeployOutcome(result=result, rolling=rolling, version=artifact.version, previous_version=previous)

    def cleanup(
        self,
        artifact: Artifact | ArtifactRef,
        *,
        keep_data: bool = False,
        opts: RunOptions = RunOptions(),
        progress: Progress | None = None,
    ) -> RunResult:
        check_host_keys(self.hosts, self.known_hosts)
        inv = self.inventory(artifact, pipelining=opts.pipelining)
        inv["all"]["children"]["p2pvalue"]["vars"]["cleanup_keep_data"] = keep_data
        result = run_playbook(PLAYBOOKS / "cleanup.yml", inventory_yaml(inv), opts=opts, progress=progress)
        if result.ok:
            (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        return result


def for_testbed(tb: Any, topology: Any = None) -> AnsibleDeployer:
    """The deployer of a testbed's `deploy: ansible` devices, from the shared federation plan."""
    from .ansible_nodes import known_hosts_of, testbed_hosts

    hosts, manifest = testbed_hosts(tb, topology)
    return AnsibleDeployer(
        hosts,
        state_dir=str(tb.state.dir),
        known_hosts=known_hosts_of(tb),
        render=manifest.render_config,
    )


def cleanup_remote(tb: Any, opts: RunOptions = RunOptions(), progress: Progress | None = None) -> RunResult | None:
    """What `cnlab down` does first on a remote testbed whose nodes were deployed: the cleanup
    role on its real devices (nodes stopped, installation, config and data removed). None when
    there is nothing to remove (not a remote testbed, or never deployed)."""
    import json

    path = Path(tb.state.dir) / STATE_FILE
    if tb.plan.kind != "remote" or not path.exists():
        return None
    data = json.loads(path.read_text())
    ref = ArtifactRef(
        path=str(data.get("artifact") or ""),
        version=str(data.get("version") or ""),
        distribution=str(data.get("distribution") or ""),
    )
    return for_testbed(tb).cleanup(ref, opts=opts, progress=progress)
