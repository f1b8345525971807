"""What a remote testbed's devices cannot carry is refused before the deploy, at the event's line
(`Remote.preflight`): from the capabilities `up` probed (here written as `up` writes them, for
devices that are never contacted) and the devices' addresses. No root, no network."""

from __future__ import annotations

from dataclasses import asdict

from toolkit.experiment.loader import load_experiment
from toolkit.experiment.platforms import Emulated, Remote, platform_for
from toolkit.testbed import remote
from toolkit.testbed.remote_faults import Capabilities
from toolkit.testbed.state import TestbedState
from toolkit.testbed.testbed import Testbed

EXPERIMENT = """\
name: on-hardware
topology:
  name: fleet
  devices:
    r1: {kind: ssh, host: 198.18.255.1}
    r2: {kind: ssh, host: 198.18.255.2}
    r3: {kind: ssh, host: gw.example.net}
  links:
    - {between: [r1, r2]}
    - {between: [r2, r3]}
duration_s: 20
workload: {model: constant, rate_per_s: 2}
timeline:
  - {name: cut, at_s: 1, partition: {groups: [[r1], [r2, r3]]}}
  - {name: mend, at_s: 2, heal: true}
  - {name: slow, at_s: 3, link: {between: [r1, r2], one_way: true, set: {delay_ms: 20}}}
  - {name: off, at_s: 4, link: {between: [r2, r3], up: false}}
  - {name: whole, at_s: 5, partition: {groups: [[r1, r2, r3]]}}
"""


def test_remote_preflight_refuses_each_fault_a_device_cannot_carry_at_its_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CNLAB_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT)
    exp = load_experiment(path)
    assert isinstance(platform_for(exp.topology), Remote) and not Remote.needs_root
    plan = remote.plan_remote_testbed(
        exp.topology, "p1", state_dir=str(tmp_path / "state" / "p1"), known_hosts=str(tmp_path / "known_hosts")
    )
    state = TestbedState("p1")
    state.create()
    caps = {  # r1: nft and netem; r2: nft, no netem; r3: nothing
        "r1": Capabilities(nft=True, tc=True, netem="yes"),
        "r2": Capabilities(nft=True, tc=True, netem="no"),
        "r3": Capabilities(nft=False, tc=False, netem="unknown"),
    }
    state.write(remote.DEVICES_FILE, {d: asdict(c) for d, c in caps.items()})
    problems = Remote().preflight(Testbed(state, plan), exp)
    got = [(p.file, p.line, p.col, p.message) for p in problems]
    name = "device r3: host 'gw.example.net' is a name, not an address; link faults on real devices filter by address"
    assert got == [
        (str(path), 17, 5, f"event 'off': {name} (give `host:` as an IP address)"),
        (
            str(path),
            17,
            5,
            "event 'off': link r2~r3 cannot be taken down: device r3 lacks nftables (the `nft` command, root)",
        ),
        (str(path), 18, 5, "event 'whole': a partition needs at least two groups"),
    ], got
    # cut (r1~r2 only) and mend need nft on r1 and r2, which they have; the one-way delay r1 -> r2
    # needs netem on r1 only (r2 has none)


def test_emulated_testbeds_refuse_nothing(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        EXPERIMENT.replace("{kind: ssh, host: 198.18.255.1}", "{}")
        .replace("{kind: ssh, host: 198.18.255.2}", "{}")
        .replace("{kind: ssh, host: gw.example.net}", "{}")
    )
    exp = load_experiment(path)
    emulated = platform_for(exp.topology)
    assert isinstance(emulated, Emulated) and emulated.needs_root
    assert emulated.preflight(None, exp) == []
