"""A real sshd inside emulated devices that are deployed with Ansible (`deploy: ansible`).

Pure: the paths, sshd_config and the shell steps; the executor runs them. Layout under the
testbed's state directory:

    ssh/
      id_ed25519, id_ed25519.pub   the testbed's client key (the only authorized key)
      authorized_keys              = id_ed25519.pub
      known_hosts                  written by the toolkit on first contact (accept-new)
      <device>/ssh_host_ed25519_key(.pub)   the device's host key, generated per testbed
      <device>/sshd_config, sshd.pid, sshd.log
    devices/<device>/root/         the device's own root prefix: what the role installs goes here,
                                   since emulated devices share the host's file system

sshd listens only on the device's management address, port 22, inside the device namespace (and
its cgroup, so what it starts is limited like the device). Only public-key logins as root.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


@dataclass(frozen=True)
class SshdPaths:
    ssh_dir: str
    device: str

    @property
    def dir(self) -> str:
        return f"{self.ssh_dir}/{self.device}"

    @property
    def host_key(self) -> str:
        return f"{self.dir}/ssh_host_ed25519_key"

    @property
    def config(self) -> str:
        return f"{self.dir}/sshd_config"

    @property
    def pid_file(self) -> str:
        return f"{self.dir}/sshd.pid"

    @property
    def log(self) -> str:
        return f"{self.dir}/sshd.log"


def ssh_dir(state_dir: str) -> str:
    return f"{state_dir}/ssh"


def client_key(state_dir: str) -> str:
    return f"{ssh_dir(state_dir)}/id_ed25519"


def known_hosts(state_dir: str) -> str:
    return f"{ssh_dir(state_dir)}/known_hosts"


def device_root(state_dir: str, device: str) -> str:
    return f"{state_dir}/devices/{device}/root"


def sshd_config(*, listen: str, port: int, host_key: str, pid_file: str, authorized_keys: str, home: str) -> str:
    """The config of an emulated device's sshd. `home` is HOME in its sessions: sshd runs every
    command through the user's login shell, and bash started by sshd reads ~/.bashrc, so with the
    emulating machine's HOME a device would run that machine's shell set-up (e.g. `pyenv rehash`,
    which waits a minute on a lock left behind) in every Ansible task."""
    return "\n".join(
        [
            "# sshd of a cnlab device (generated; see toolkit/testbed/sshd.py)",
            f"ListenAddress {listen}:{port}",
            f"HostKey {host_key}",
            f"PidFile {pid_file}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the state directory may sit in a world-readable tmp dir
            "PrintMotd no",
            "MaxStartups 100:30:200",
            "MaxSessions 64",
            "UseDNS no",
            f"Subsystem sftp {SFTP_SERVER}",
            f'SetEnv HOME="{home}"',
            "",
        ]
    )


def keygen_script(state_dir: str, devices: list[str]) -> str:
    """Generate the testbed's client key and each device's host key (if not there yet)."""
    d = ssh_dir(state_dir)
    key = client_key(state_dir)
    lines = [
        f"mkdir -p {shlex.quote(d)}",
        f"chmod 700 {shlex.quote(d)}",
        f"[ -f {shlex.quote(key)} ] || ssh-keygen -q -t ed25519 -N '' -C cnlab-testbed -f {shlex.quote(key)}",
        f"cp {shlex.quote(key + '.pub')} {shlex.quote(d + '/authorized_keys')}",
        f"touch {shlex.quote(known_hosts(state_dir))}",
    ]
    for dev in devices:
        p = SshdPaths(d, dev)
        lines += [
            f"mkdir -p {shlex.quote(p.dir)}",
            f"[ -f {shlex.quote(p.host_key)} ] || ssh-keygen -q -t ed25519 -N '' -C {shlex.quote(dev)} "
            f"-f {shlex.quote(p.host_key)}",
        ]
    return "\n".join(lines)


def start_script(paths: SshdPaths, tasks_files: list[str]) -> str:
    """Run inside the device namespace: join the device's cgroups, start sshd (it daemonizes and
    writes its pid file)."""
    joins = [f"echo $$ > {shlex.quote(t)}" for t in tasks_files]
    return "\n".join(
        [
            "mkdir -p /run/sshd",  # sshd's privilege separation directory
            *joins,
            f"{SSHD} -f {shlex.quote(paths.config)} -E {shlex.quote(paths.log)}",
            f"for i in $(seq 100); do [ -s {shlex.quote(paths.pid_file)} ] && break; sleep 0.02; done",
            f"cat {shlex.quote(paths.pid_file)}",
        ]
    )
