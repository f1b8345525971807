"""A device reached over SSH (paramiko), on the Target protocol: run, start, put_file (+ get_file).

Host keys are always checked, with an explicit policy (Fabric's default accepts any key, paramiko's
rejects unknown ones; neither is what an operator wants):

- a per-testbed `known_hosts` file is loaded before connecting and written on first contact;
- a fingerprint pinned in the topology (`host_key: SHA256:...`) must match, always;
- otherwise an unknown device is accepted on first contact ("accept-new", as OpenSSH's
  `StrictHostKeyChecking=accept-new`) and remembered;
- a key that differs from the remembered or pinned one is an error naming the device, never a
  warning. Remove the line from known_hosts (`ssh-keygen -R`) after re-installing a device.

`for_each(items, fn, max_parallel)` runs work on many devices with a bounded thread pool (Fabric's
ThreadingGroup starts one thread per host with no cap).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paramiko

from ..errors import RunError

DEFAULT_MAX_PARALLEL = 10
CONNECT_TIMEOUT_S = 10.0
CONNECT_ATTEMPTS = 3
CONNECT_RETRY_S = 1.0  # times the attempt number


@dataclass(frozen=True)
class SshEndpoint:
    """Where a device answers SSH and how to log in. `host_key` is a pinned SHA256 fingerprint."""

    name: str
    host: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    host_key: str | None = None
    become: bool = False

    @property
    def known_hosts_name(self) -> str:
        """The host's name in known_hosts, as OpenSSH writes it."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:...` as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostKeyMismatch(RunError):
    pass


_known_hosts_lock = threading.Lock()


class KnownHosts:
    """A known_hosts file shared by the threads of one process (and, by flock, processes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def lookup(self, ep: SshEndpoint) -> list[paramiko.PKey]:
        if not self.path.exists():
            return []
        keys = paramiko.HostKeys(str(self.path)).lookup(ep.known_hosts_name)
        return list(keys.values()) if keys else []

    def add(self, ep: SshEndpoint, key: paramiko.PKey) -> None:
        line = f"{ep.known_hosts_name} {key.get_name()} {key.get_base64()}\n"
        with _known_hosts_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                f.write(line)

    def remove(self, ep: SshEndpoint) -> None:
        """Forget a device's key (after it was re-installed)."""
        with _known_hosts_lock:
            if not self.path.exists():
                return
            lines = self.path.read_text().splitlines(keepends=True)
            keep = [ln for ln in lines if ln.split(" ", 1)[0] != ep.known_hosts_name]
            self.path.write_text("".join(keep))


def verify_host_key(ep: SshEndpoint, key: paramiko.PKey, known: KnownHosts) -> bool:
    """Check a presented key against the pin and known_hosts; True if it was new (and recorded).
    Raises HostKeyMismatch naming the device when it differs."""
    got = fingerprint(key)
    if ep.host_key and got != ep.host_key:
        raise HostKeyMismatch(
            f"device {ep.name} ({ep.known_hosts_name}): host key {got} does not match the "
            f"fingerprint pinned in the topology ({ep.host_key}); refusing to connect"
        )
    remembered = [k for k in known.lookup(ep) if k.get_name() == key.get_name()]
    if remembered:
        if all(fingerprint(k) != got for k in remembered):
            raise HostKeyMismatch(
                f"device {ep.name} ({ep.known_hosts_name}): host key changed: it presents {got}, "
                f"{known.path} has {fingerprint(remembered[0])}; refusing to connect (if the device "
                f"was re-installed, remove its line from {known.path})"
            )
        return False
    known.add(ep, key)  # accept-new: first contact on the management link
    return True


class _Policy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko, before authenticating, for a key it does not know (it raises
    BadHostKeyException itself for a changed one): check the pin, remember the key."""

    def __init__(self, ep: SshEndpoint, known: KnownHosts):
        self.ep, self.known = ep, known

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        verify_host_key(self.ep, key, self.known)


T = TypeVar("T")
R = TypeVar("R")


def for_each(
    items: Iterable[T],
    fn: Callable[[T], R],
    max_parallel: int = DEFAULT_MAX_PARALLEL,
) -> list[tuple[T, R | BaseException]]:
    """Run fn on every item, at most max_parallel at once; results (or the exception) in order."""
    items = list(items)
    if not items:
        return []

    def call(item: T) -> R | BaseException:
        try:
            return fn(item)
        except Exception as e:  # returned to the caller, who names the device
            return e

    with ThreadPoolExecutor(max(1, min(max_parallel, len(items)))) as pool:
        return list(zip(items, pool.map(call, items), strict=True))


class SshTarget:
    """One device over SSH. Connects on first use; `close()` (or `with`) ends the session."""

    def __init__(self, endpoint: SshEndpoint, known_hosts: KnownHosts | str | Path):
        self.endpoint = endpoint
        self.name = endpoint.name
        self.known = known_hosts if isinstance(known_hosts, KnownHosts) else KnownHosts(known_hosts)
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> SshTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---- connection ----------------------------------------------------------------------------
    def connect(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None:
                return self._client
            ep = self.endpoint
            for attempt in range(CONNECT_ATTEMPTS):
                client = paramiko.SSHClient()
                if self.known.path.exists():
                    client.load_host_keys(str(self.known.path))
                client.set_missing_host_key_policy(_Policy(ep, self.known))
                try:
                    self._connect_once(client)  # host-key and login refusals raise at once
                    break
                except (TimeoutError, paramiko.SSHException, OSError) as e:
                    # a dropped or half-opened connection (a busy sshd drops new ones beyond its
                    # MaxStartups, a lossy link resets one) is worth another try; a refusal is not
                    client.close()
                    if attempt + 1 == CONNECT_ATTEMPTS:
                        raise RunError(
                            f"device {ep.name}: cannot connect over SSH to {ep.user}@{ep.known_hosts_name} "
                            f"({CONNECT_ATTEMPTS} attempts): {e}"
                        ) from None
                    time.sleep(CONNECT_RETRY_S * (attempt + 1))
            transport = client.get_transport()
            assert transport is not None
            got = fingerprint(transport.get_remote_server_key())
            if ep.host_key and got != ep.host_key:  # a remembered key must match the pin too
                client.close()
                raise HostKeyMismatch(
                    f"device {ep.name} ({ep.known_hosts_name}): host key {got} does not match the "
                    f"fingerprint pinned in the topology ({ep.host_key}); refusing to connect"
                )
            self._client = client
            return client

    def _connect_once(self, client: paramiko.SSHClient) -> None:
        ep = self.endpoint
        try:
            client.connect(
                ep.host,
                port=ep.port,
                username=ep.user,
                key_filename=ep.key_file,
                timeout=CONNECT_TIMEOUT_S,
                banner_timeout=CONNECT_TIMEOUT_S,
                auth_timeout=CONNECT_TIMEOUT_S,
                allow_agent=False,
                look_for_keys=ep.key_file is None,
            )
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyMismatch(
                f"device {ep.name} ({ep.known_hosts_name}): host key changed: it presents "
                f"{fingerprint(e.key)}, {self.known.path} has {fingerprint(e.expected_key)}; "
                f"refusing to connect (if the device was re-installed, remove its line from "
                f"{self.known.path})"
            ) from None
        except HostKeyMismatch:
            client.close()
            raise
        except paramiko.AuthenticationException as e:
            client.close()
            raise RunError(f"device {ep.name}: SSH login as {ep.user}@{ep.known_hosts_name} refused: {e}") from None

    def host_key_fingerprint(self) -> str:
        transport = self.connect().get_transport()
        assert transport is not None
        return fingerprint(transport.get_remote_server_key())

    # ---- Target protocol -----------------------------------------------------------------------
    def _wrap(self, argv: list[str]) -> str:
        cmd = shlex.join(argv)
        return f"sudo -n -- {cmd}" if self.endpoint.become else cmd

    def run(
        self, argv: list[str], *, input: str | None = None, timeout_s: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run argv on the device (quoted for its shell); stdout and stderr as text."""
        return self.run_shell(self._wrap(argv), argv=argv, input=input, timeout_s=timeout_s, check=check)

    def run_shell(
        self,
        command: str,
        *,
        argv: list[str] | None = None,
        input: str | None = None,
        timeout_s: float = 60,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        client = self.connect()
        transport = client.get_transport()
        assert transport is not None
        chan = transport.open_session(timeout=CONNECT_TIMEOUT_S)
        chan.settimeout(timeout_s)
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout_s
        try:
            chan.exec_command(command)
            if input is not None:
                chan.sendall(input.encode())
            chan.shutdown_write()
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                else:
                    if time.monotonic() > deadline:
                        raise RunError(f"device {self.name}: `{command}` did not finish within {timeout_s:g} s")
                    time.sleep(0.005)
            rc = chan.recv_exit_status()
        except (TimeoutError, paramiko.SSHException) as e:
            raise RunError(f"device {self.name}: `{command}` failed over SSH: {e}") from None
        finally:
            chan.close()
        cp = subprocess.CompletedProcess(
            argv or command, rc, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and rc != 0:
            tail = " | ".join((cp.stderr or cp.stdout).strip().splitlines()[-5:])
            raise RunError(f"device {self.name}: `{command}` exited {rc}: {tail}")
        return cp

    def start(self, argv: list[str], *, log_path: str, env: dict[str, str] | None = None) -> int:
        """Start argv detached (own session, stdin closed, output to log_path); returns its pid."""
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        inner = f"{'env ' + envs + ' ' if envs else ''}{shlex.join(argv)}"
        cmd = f"setsid sh -c {shlex.quote('exec ' + inner)} </dev/null >>{shlex.quote(log_path)} 2>&1 & echo $!"
        if self.endpoint.become:
            cmd = f"sudo -n sh -c {shlex.quote(cmd)}"
        cp = self.run_shell(cmd, argv=argv)
        return int(cp.stdout.strip().splitlines()[-1])

    def put_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        """Write a file; its mode is set before any content is written."""
        if self.endpoint.become:  # sftp runs as the login user: write through sudo instead
            self.run_shell(
                f"sudo -n sh -c {shlex.quote(f'umask 077; cat > {shlex.quote(path)} && chmod {mode:o} {shlex.quote(path)}')}",
                input=content.decode("latin-1"),
            )
            return
        sftp = self.connect().open_sftp()
        try:
            with sftp.open(path, "wb") as f:
                sftp.chmod(path, mode)
                f.write(content)
        except OSError as e:
            raise RunError(f"device {self.name}: cannot write {path}: {e}") from None
        finally:
            sftp.close()

    def make_dir(self, path: str) -> None:
        self.run(["mkdir", "-p", path])

    def get_file(self, path: str) -> bytes:
        sftp = self.connect().open_sftp()
        try:
            with sftp.open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise RunError(f"device {self.name}: cannot read {path}: {e}") from None
        finally:
            sftp.close()


def scan_host_key(ep: SshEndpoint, known: KnownHosts) -> str:
    """Connect, check (or learn) the host key, disconnect; returns the fingerprint."""
    with SshTarget(ep, known) as t:
        return t.host_key_fingerprint()


def ssh_options(known_hosts: str | Path) -> list[str]:
    """OpenSSH options (for Ansible) that trust exactly the per-testbed known_hosts."""
    return [
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
    ]


__all__: list[Any] = [
    "SshEndpoint",
    "SshTarget",
    "KnownHosts",
    "HostKeyMismatch",
    "fingerprint",
    "verify_host_key",
    "for_each",
    "scan_host_key",
    "ssh_options",
]
