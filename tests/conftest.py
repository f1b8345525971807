"""Markers for tests that need more than Python: root (netns), an sshd, a prometheus binary,
a chromium browser.

Without what they need these tests skip on a developer's machine, but in CI (CI or
CNLAB_REQUIRE_ALL set) a missing requirement fails the test instead of skipping it silently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import capabilities

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
FFWIEN = SHARED / "data" / "topologies" / "ffwien-2019.netjson.json"


def _missing(marker: str) -> str | None:
    if marker == "netns":
        if not capabilities.is_root():
            return "needs root"
        if not capabilities.kernel_features()["netns"]:
            return "network namespaces do not work here"
    if marker == "ssh" and not capabilities.which("sshd"):
        return "needs sshd (apt-get install openssh-server)"
    if marker == "prometheus" and not capabilities.which("prometheus"):
        return "needs prometheus (apt-get install prometheus)"
    if marker == "chromium" and not capabilities.which("chromium"):
        return "needs chromium (apt-get install chromium)"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in ("netns", "ssh", "prometheus", "chromium"):
        if item.get_closest_marker(marker) is None:
            continue
        why = _missing(marker)
        if why is None:
            continue
        if os.environ.get("CI") or os.environ.get("CNLAB_REQUIRE_ALL"):
            pytest.fail(f"marked {marker}: {why}, and CI must run every marked test")
        pytest.skip(f"marked {marker}: {why}")


@pytest.fixture
def cnlab():
    """Run the real `cnlab` entry point in a subprocess."""
    exe = Path(sys.executable).parent / "cnlab"

    def run(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False
        )

    return run


@pytest.fixture
def ffwien() -> Path:
    if not FFWIEN.exists():
        pytest.fail(f"{FFWIEN} is missing: the repository must sit beside shared/")
    return FFWIEN
