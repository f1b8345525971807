"""The topology YAML loader: what valid files become, and where each mistake is reported."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from toolkit.errors import InputError
from toolkit.topology import Direction
from toolkit.topology.loader import load_topology
from toolkit.topology.presets import LINK_PRESETS, PROFILES

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topo.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(InputError) as info:
        load_topology(write(tmp_path, text))
    return [(p.line, p.col, p.message) for p in info.value.problems]


def test_issue_example_loads_with_presets_overrides_and_asymmetry(tmp_path: Path) -> None:
    topo = load_topology(
        write(
            tmp_path,
            """
        name: two-sites
        defaults: {profile: alix, link: mesh-2.4ghz}
        sites: {west: {}, east: {}}
        devices:
          w1: {site: west}
          w2: {site: west, profile: atom-n2600}
          e1: {site: east}
          e2: {site: east}
          rd7: {kind: ssh, host: 192.0.2.7, user: root, key: ~/.ssh/id_ed25519, host_key: "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"}
        links:
          - between: [w1, w2]
          - {between: [w2, e1], link: vpn-over-dsl}
          - {between: [w1, e1], delay_ms: 12, jitter_ms: 2, loss_pct: 2, rate_kbit: 20000}
          - {between: [w1, e2], forward: {delay_ms: 5}, reverse: {delay_ms: 30}}
        federation: {image: p2pvalue, on: [west, e1]}
    """,
        )
    )
    assert list(topo.devices) == ["w1", "w2", "e1", "e2", "rd7"]
    assert topo.devices["w1"].profile == PROFILES["alix"]
    assert topo.devices["w2"].profile.memory_mb == 2048
    assert topo.devices["rd7"].kind == "ssh" and topo.devices["rd7"].ssh.host == "192.0.2.7"
    mesh = LINK_PRESETS["mesh-2.4ghz"]
    assert topo.link_between("w1", "w2").forward == mesh
    assert topo.link_between("e1", "w2").reverse == LINK_PRESETS["vpn-over-dsl"]
    custom = topo.link_between("w1", "e1").forward
    assert (custom.delay_ms, custom.jitter_ms, custom.loss_pct, custom.rate_kbit) == (12, 2, 2, 20000)
    asym = topo.link_between("w1", "e2")
    assert asym.direction("w1", "e2").delay_ms == 5 and asym.direction("e2", "w1").delay_ms == 30
    assert asym.forward.loss_pct == mesh.loss_pct  # the rest still comes from the preset
    assert topo.federation is not None and topo.federation.devices == ("w1", "w2", "e1")


def test_five_mistakes_give_five_errors_at_their_lines_and_columns(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        name: five
        devices:
          a: {profle: alix}
          b: {}
          b: {}
        links:
          - {between: [a, c]}
          - {between: [a, b], loss_pct: 120}
          - {between: [b, b]}
    """,
    )
    assert [(line, col) for line, col, _ in found] == [(3, 7), (5, 3), (7, 19), (8, 33), (9, 15)]
    messages = [m for _, _, m in found]
    assert "unknown key 'profle' (did you mean 'profile'?)" in messages[0]
    assert "duplicate key 'b' (first defined at line 4)" in messages[1]
    assert "unknown device 'c'" in messages[2]
    assert "loss_pct" in messages[3] and "100" in messages[3]
    assert "to itself" in messages[4]


@pytest.mark.parametrize(
    ("snippet", "line", "col", "needle"),
    [
        ("  - {between: [a, b], delay_ms: -1}", 6, 33, "greater than or equal to 0"),
        ("  - {between: [a, b], jitter_ms: .nan}", 6, 34, "finite number"),
        ("  - {between: [a, b], rate_kbit: -5}", 6, 34, "greater than 0"),
        ("  - {between: [a, b], loss_pct: 101}", 6, 33, "less than or equal to 100"),
        ("  - {between: [a, b], link: mesh-5ghz}", 6, 29, "unknown link preset 'mesh-5ghz'"),
        ("  - {between: [a, b], forward: {delay: 3}}", 6, 33, "unknown key 'delay' (did you mean 'delay_ms'?)"),
        ("  - {between: [a]}", 6, 15, "between"),
        ("  - {between: [a, b]}\n  - {between: [b, a]}", 7, 15, "duplicate link between 'b' and 'a' (first at line 6)"),
    ],
)
def test_link_mistakes_are_reported_where_they_are(
    tmp_path: Path, snippet: str, line: int, col: int, needle: str
) -> None:
    found = problems(tmp_path, "name: t\ndevices:\n  a: {}\n  b: {}\nlinks:\n" + snippet + "\n")
    assert len(found) == 1, found
    assert found[0][:2] == (line, col)
    assert needle in found[0][2]


def test_disconnected_data_plane_is_an_error_unless_allowed(tmp_path: Path) -> None:
    text = "name: t\ndevices: {a: {}, b: {}, c: {}}\nlinks:\n  - {between: [a, b]}\n"
    found = problems(tmp_path, text)
    assert len(found) == 1 and found[0][:2] == (3, 1)
    assert "falls apart into 2 parts" in found[0][2] and "allow_partitioned" in found[0][2]
    topo = load_topology(write(tmp_path, text + "allow_partitioned: true\n"))
    assert topo.allow_partitioned and len(topo.devices) == 3


@pytest.mark.parametrize("name", ["W1", "1w", "w_1", "w-", "a" * 64, "wé"])
def test_names_that_cannot_become_host_names_are_rejected(tmp_path: Path, name: str) -> None:
    found = problems(tmp_path, f"name: t\ndevices:\n  '{name}': {{}}\n")
    assert found[0][:2] == (3, 3)
    assert "not allowed" in found[0][2]


def test_unknown_references_get_did_you_mean(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        name: t
        sites: {west: {}}
        devices:
          a: {site: wset, profile: atom-n2060}
          b: {kind: ssh}
          c: {host: 192.0.2.1}
        links:
          - {between: [a, c]}
        federation: {on: [a, nowhere]}
    """,
    )
    messages = "\n".join(f"{line}:{col}: {m}" for line, col, m in found)
    assert "4:28: unknown profile 'atom-n2060' (did you mean 'atom-n2600'?)" in messages
    assert "4:13: unknown site 'wset' (did you mean 'west'?)" in messages
    assert "5:6: an ssh device needs 'host'" in messages
    assert "6:6: host only apply to kind: ssh" in messages
    assert "'nowhere' is neither a device nor a site" in messages


def test_yaml_syntax_errors_and_non_mappings(tmp_path: Path) -> None:
    found = problems(tmp_path, "name: t\ndevices: {a: {}\n")
    assert found[0][0] >= 2 and "not valid YAML" in found[0][2]
    found = problems(tmp_path, "- just\n- a list\n")
    assert "a topology file is a mapping" in found[0][2]
    with pytest.raises(InputError, match="no such file"):
        load_topology(tmp_path / "missing.yaml")


def test_yaml_12_booleans_keep_on_and_yes_as_strings(tmp_path: Path) -> None:
    topo = load_topology(
        write(
            tmp_path,
            """
        name: t
        devices: {a: {}, b: {}}
        links: [{between: [a, b], up: false}]
        federation: {on: all}
    """,
        )
    )
    assert topo.federation.devices == ("a", "b")
    assert topo.links[0].up is False
    found = problems(tmp_path, "name: t\ndevices: {a: {}, b: {}}\nlinks: [{between: [a, b], up: yes}]\n")
    assert "up" in found[0][2]


def test_custom_profiles_and_presets(tmp_path: Path) -> None:
    topo = load_topology(
        write(
            tmp_path,
            """
        name: t
        profiles: {apu2: {cpus: 1.5, memory_mb: 4096, source: PC Engines APU2}}
        link_presets: {fibre: {delay_ms: 0.5, rate_kbit: 100000}}
        devices: {a: {profile: apu2}, b: {}}
        links: [{between: [a, b], link: fibre, reverse: {loss_pct: 1}}]
    """,
        )
    )
    assert topo.devices["a"].profile.cpus == 1.5
    link = topo.links[0]
    assert link.forward == Direction(delay_ms=0.5, rate_kbit=100000)
    assert link.reverse == Direction(delay_ms=0.5, rate_kbit=100000, loss_pct=1)


def test_examples_in_the_repository_validate() -> None:
    examples = sorted((REPO / "experiments" / "topologies").glob("*.yaml"))
    assert len(examples) >= 3
    sizes = {p.stem: len(load_topology(p).devices) for p in examples}
    assert sizes["line-3"] == 3 and sizes["two-sites"] == 12 and sizes["ffwien"] == 246


def test_routing_key(tmp_path: Path) -> None:
    base = "name: t\ndevices: {a: {}, b: {}}\nlinks: [{between: [a, b]}]\n"
    assert load_topology(write(tmp_path, base)).routing == "static"
    assert load_topology(write(tmp_path, base + "routing: babeld\n")).routing == "babeld"
    found = problems(tmp_path, base + "routing: olsr\n")
    assert found[0][:2] == (4, 10) and "babeld" in found[0][2]
