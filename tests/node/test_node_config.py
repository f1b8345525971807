"""Config rendering from the image's Jinja2 template, validation errors that name the field, and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from p2pvalue_node.config import ConfigError, load_config, parse_config_text, render_config
from p2pvalue_node.keys import generate, load_key

PUB = generate().public_b64


def values(**over: Any) -> dict[str, Any]:
    v: dict[str, Any] = {
        "domain": "n12.ffwien",
        "listen": {
            "client": {"host": "198.18.0.12", "port": 8080},
            "federation": {"host": "198.18.0.12", "port": 8448},
            "metrics": {"host": "fd00::12", "port": 9108},
        },
        "data_dir": "/var/lib/p2pvalue",
        "signing_key": "/etc/p2pvalue/signing.key",
        "admin_token_file": "/etc/p2pvalue/admin.token",
        "trusted_peers": [{"domain": "n13.ffwien", "address": "http://198.18.0.13:8448", "public_key": PUB}],
        "limits": {"max_body_bytes": 65536},
    }
    v.update(over)
    return v


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pvalue_node.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_render_config_produces_a_valid_config() -> None:
    text = render_config(values())
    cfg = parse_config_text(text)
    assert cfg.domain == "n12.ffwien"
    assert cfg.listen.metrics.host == "fd00::12"
    assert cfg.trusted_peers[0].public_key == PUB
    assert cfg.limits.max_body_bytes == 65536
    assert cfg.limits.max_loaded_documents == 256  # template default
    assert str(cfg.admin_token_file) == "/etc/p2pvalue/admin.token"
    # no peers renders an empty list
    assert parse_config_text(render_config(values(trusted_peers=[]))).trusted_peers == []


@pytest.mark.parametrize(
    "over, field",
    [
        ({"domain": "Not A Domain"}, "domain"),
        (
            {
                "listen": {
                    "client": {"host": "h", "port": 1},
                    "federation": {"host": "h", "port": 2},
                    "metrics": {"host": "0.0.0.0", "port": 3},
                }
            },
            "listen.metrics",
        ),
        (
            {
                "listen": {
                    "client": {"host": "h", "port": 70000},
                    "federation": {"host": "h", "port": 2},
                    "metrics": {"host": "m", "port": 3},
                }
            },
            "listen.client.port",
        ),
        (
            {"trusted_peers": [{"domain": "n13.ffwien", "address": "http://x:1", "public_key": "short"}]},
            "trusted_peers[0].public_key",
        ),
        (
            {"trusted_peers": [{"domain": "n13.ffwien", "address": "ftp://x", "public_key": PUB}]},
            "trusted_peers[0].address",
        ),
        ({"limits": {"max_body_bytes": 10}}, "limits.max_body_bytes"),
    ],
)
def test_rendering_a_bad_value_names_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        render_config(values(**over))
    assert err.value.field == field
    assert field in str(err.value)


def test_loader_errors(tmp_path: Path) -> None:
    good = yaml.safe_load(render_config(values()))
    p = tmp_path / "node.yaml"
    bad = dict(good, surprise=1)
    p.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"node.yaml: surprise: unknown key"):
        load_config(p)
    p.write_text("domain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"node.yaml:\d+:\d+: not valid YAML"):
        load_config(p)
    no_admin = {k: v for k, v in good.items() if k != "admin_token_file"}
    p.write_text(yaml.safe_dump(no_admin))
    with pytest.raises(ConfigError, match="admin_token"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_missing_template_value_is_an_error() -> None:
    v = values()
    del v["signing_key"]
    with pytest.raises(ConfigError, match="signing_key"):
        render_config(v)


def test_cli_check_config_and_keygen(tmp_path: Path) -> None:
    p = tmp_path / "node.yaml"
    p.write_text(render_config(values()))
    ok = cli("check-config", str(p))
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = yaml.safe_load(p.read_text())
    bad["limits"]["max_participants"] = "many"
    p.write_text(yaml.safe_dump(bad))
    res = cli("check-config", str(p))
    assert res.returncode == 2
    assert str(p) in res.stderr and "limits.max_participants" in res.stderr
    assert "Traceback" not in res.stderr
    # keygen writes an owner-only key and prints its public key; a second run keeps the key
    key = tmp_path / "keys" / "signing.key"
    first = cli("keygen", "--out", str(key))
    assert first.returncode == 0
    assert first.stdout.strip() == load_key(key).public_b64
    assert key.stat().st_mode & 0o777 == 0o600
    assert cli("keygen", "--out", str(key)).stdout == first.stdout
    assert cli("pubkey", str(key)).stdout == first.stdout
    assert cli("keygen", "--out", str(key), "--force").stdout != first.stdout
    # serve with a broken config exits 2 naming the file and field
    res = cli("serve", "--config", str(p))
    assert res.returncode == 2 and "limits.max_participants" in res.stderr


def test_image_manifest_matches_the_package() -> None:
    import p2pvalue_node
    from p2pvalue_node.cli import build_parser

    root = Path(__file__).resolve().parents[2] / "node_images" / "p2pvalue"
    manifest = yaml.safe_load((root / "image.yaml").read_text())
    for key in ("name", "version", "ports", "health", "metrics", "resources", "config", "start", "targets"):
        assert key in manifest, key
    assert manifest["version"] == p2pvalue_node.__version__
    assert set(manifest["ports"]) == {"client", "federation", "metrics"}
    for t in manifest["config"]["templates"]:
        assert (root / t["template"]).is_file()
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert manifest["start"]["command"][1] in commands
    assert manifest["keys"]["generate"][1] in commands and manifest["accounts"]["create"][1] in commands
    archs = {(t["os"], t.get("arch")) for t in manifest["targets"]}
    assert ("debian", "x86_64") in archs and ("debian", "arm64") in archs and ("openwrt", None) in archs
