"""Pure parts of deploying over SSH: host-key policy, inventory, topology fields (no root, no sshd)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
import yaml

from toolkit.deploy.inventory import AnsibleHost, ArtifactRef, NodeSpec, build_inventory, inventory_yaml
from toolkit.errors import InputError
from toolkit.targets.ssh import HostKeyMismatch, KnownHosts, SshEndpoint, fingerprint, verify_host_key
from toolkit.topology.loader import load_topology

VENV_BIN = Path(sys.executable).parent


def test_host_key_accept_new_then_pinned_then_changed(tmp_path):
    known = KnownHosts(tmp_path / "known_hosts")
    ep = SshEndpoint("r1", "198.18.9.2", port=2222)
    key, other = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None, None
    if key is None:  # paramiko has no Ed25519 generator: use RSA keys, the policy is the same
        key, other = paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)
    assert verify_host_key(ep, key, known) is True  # first contact: learned
    assert "[198.18.9.2]:2222 " in known.path.read_text()
    assert verify_host_key(ep, key, known) is False  # known and equal
    with pytest.raises(HostKeyMismatch, match=r"device r1 .*host key changed"):
        verify_host_key(ep, other, known)
    pinned = SshEndpoint("r2", "198.18.9.3", host_key=fingerprint(other))
    with pytest.raises(HostKeyMismatch, match=r"device r2 .*does not match the fingerprint pinned"):
        verify_host_key(pinned, key, known)
    assert "198.18.9.3" not in known.path.read_text()  # a refused key is never remembered
    assert verify_host_key(SshEndpoint("r3", "198.18.9.4", host_key=fingerprint(key)), key, known) is True


def _hosts(tmp_path: Path) -> list[AnsibleHost]:
    hosts = []
    for i in range(3):
        key = tmp_path / f"d{i}.key"
        key.write_text("ed25519 SECRETSEED\n")
        node = NodeSpec(
            device=f"d{i}",
            domain=f"d{i}.t",
            trusted_peers=(
                {"domain": f"d{(i + 1) % 3}.t", "address": "http://198.19.0.9:8448", "public_key": "PUB{{x}}"},
            ),
            listen={"client": {"host": "0.0.0.0", "port": 8080}},
            key_src=str(key),
            admin_token_src=str(tmp_path / f"d{i}.token"),
            health_url=f"http://198.18.0.{i + 2}:8080/health",
        )
        hosts.append(
            AnsibleHost(
                node,
                SshEndpoint(f"d{i}", f"198.18.0.{i + 2}", key_file="/k"),
                root=f"/r/d{i}",
                service_manager="pidfile",
            )
        )
    return hosts


def test_inventory_has_per_host_vars_and_no_secret(tmp_path):
    rendered = []

    def render(values):
        rendered.append(values)
        return f"domain: {values['domain']}\nsigning_key: {values['signing_key']}\npeer: {values['trusted_peers'][0]['public_key']}\n"

    inv = build_inventory(
        _hosts(tmp_path),
        artifact=ArtifactRef("/a/p.tar.gz", "0.1.0", "p2pvalue-node"),
        known_hosts="/kh",
        render=render,
    )
    text = inventory_yaml(inv)
    assert "SECRETSEED" not in text
    assert rendered[0]["signing_key"] == "/r/d0/etc/p2pvalue/signing.key"  # the device's own path
    d1 = inv["all"]["children"]["p2pvalue"]["hosts"]["d1"]
    assert d1["ansible_host"] == "198.18.0.3" and d1["p2pvalue_root"] == "/r/d1"
    assert d1["p2pvalue_signing_key_src"] == str(tmp_path / "d1.key")
    assert "StrictHostKeyChecking=yes" in inv["all"]["vars"]["ansible_ssh_common_args"]
    # the real Ansible reads it; the config text is !unsafe, so '{{x}}' in it is not templated
    path = tmp_path / "inv.yml"
    path.write_text(text)
    cp = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(path), "--host", "d1"],
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    host = json.loads(cp.stdout)
    assert host["p2pvalue_config_text"].endswith("peer: PUB{{x}}\n")
    assert host["p2pvalue_health_url"] == "http://198.18.0.3:8080/health"


def test_topology_deploy_and_become(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(
        "name: t\ndevices:\n"
        "  a: {deploy: ansible}\n"
        "  b: {}\n"
        "  r: {kind: ssh, host: 192.0.2.1, key: keys/id, become: true}\n"
        "links: [{between: [a, b]}]\n"
    )
    topo = load_topology(f)
    assert topo.devices["a"].deploy == "ansible" and topo.devices["b"].deploy == "direct"
    assert topo.devices["r"].deploy == "ansible" and topo.devices["r"].ssh.become is True
    assert topo.devices["r"].ssh.key == str(tmp_path / "keys" / "id")  # relative to the file
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: t\ndevices:\n"
        "  a: {deploy: rsync}\n"
        "  b: {become: true}\n"
        "  r: {kind: ssh, host: 192.0.2.1, deploy: direct}\n"
    )
    with pytest.raises(InputError) as e:
        load_topology(bad)
    text = str(e.value)
    assert f"{bad}:3:15: deploy: Input should be" in text
    assert f"{bad}:4:6: become only apply to kind: ssh" in text
    assert f"{bad}:5:6: ssh devices are deployed with ansible, not direct" in text


def test_roles_have_the_ansible_layout():
    roles = Path(__file__).resolve().parents[2] / "playbooks" / "roles"
    for role in ("p2pvalue_node", "node_exporter", "cleanup"):
        for part in ("tasks", "handlers", "templates", "defaults", "meta"):
            assert (roles / role / part).is_dir(), f"{role}/{part}"
        yaml.safe_load((roles / role / "tasks" / "main.yml").read_text())


def test_playbooks_pass_syntax_check(tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text("all: {children: {p2pvalue: {hosts: {d0: {}}}}}\n")
    pb = Path(__file__).resolve().parents[2] / "playbooks"
    for name in ("site.yml", "upgrade.yml", "cleanup.yml"):
        cp = subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", str(inv), str(pb / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert cp.returncode == 0, cp.stdout + cp.stderr
