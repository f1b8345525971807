"""The rules and config checked by promtool (the real one, from Debian's prometheus package)."""

from __future__ import annotations

import subprocess

import pytest

from toolkit.monitor.prometheus import MONITORING_DIR, promtool_bin, render_config, rule_files

pytestmark = pytest.mark.prometheus


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool_bin(), *args], capture_output=True, text=True, timeout=120, check=False)


def test_rules_pass_promtool_check():
    cp = _promtool("check", "rules", *rule_files())
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "SUCCESS" in cp.stdout


def test_rule_unit_tests_pass():
    tests = sorted((MONITORING_DIR / "rules" / "tests").glob("*.yml"))
    assert tests
    cp = _promtool("test", "rules", *map(str, tests))
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_rendered_config_passes_promtool_check(tmp_path):
    (tmp_path / "targets").mkdir()
    for job in ("p2pvalue", "wire"):
        (tmp_path / "targets" / f"{job}.json").write_text("[]")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        render_config(
            listen="127.0.0.1:9090",
            targets_dir=tmp_path / "targets",
            jobs=["p2pvalue", "wire"],
            testbed="tb1",
            scrape_interval_s=1,
        )
    )
    cp = _promtool("check", "config", str(cfg))
    assert cp.returncode == 0, cp.stdout + cp.stderr
