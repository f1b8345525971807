"""`up` sizes the kernel's shared neighbour tables for its devices, journals its claim, and `down`
drops the claim and brings the values back to what the machine still needs (root)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.testbed import hostlimits, naming
from toolkit.testbed.testbed import Testbed

from ..testbed.conftest import line

pytestmark = pytest.mark.netns
KEY = "net.ipv4.neigh.default.gc_thresh3"


def test_up_raises_neighbour_tables_and_down_releases(state_dir):
    tb = Testbed.up(line(40), naming.random_id(), shaper="none")
    try:
        claim = hostlimits.claim_path(str(tb.state.dir))
        assert {"kind": "hostsysctl", "name": claim} in tb.state.resources()
        assert json.loads(Path(claim).read_text())["values"][KEY] == 4096  # 40 devices x 64 -> 4,096
        assert hostlimits.read(KEY) >= 4096
        assert hostlimits.read("net.ipv6.neigh.default.gc_thresh3") >= 4096
        saved = json.loads((hostlimits.REGISTRY / "saved.json").read_text())
        assert saved[KEY] >= 128  # the values before any testbed raised them
    finally:
        tb.down()
    assert not Path(claim).exists()
    # what is left is what the machine's remaining testbeds (of any cnlab) need, or the saved value
    need = hostlimits.neigh_sizes(hostlimits.machine_devices())[KEY]
    assert hostlimits.read(KEY) >= need
    if hostlimits.machine_devices() <= 16 and not any((hostlimits.REGISTRY / "claims").iterdir()):
        assert hostlimits.read(KEY) == saved[KEY]
