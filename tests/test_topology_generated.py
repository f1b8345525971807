"""Generated topologies: every valid one loads back to the same model, and any single
corruption of its YAML is reported at the line that was corrupted."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.errors import InputError
from toolkit.topology import Device, Direction, Link, Topology
from toolkit.topology.dump import to_yaml
from toolkit.topology.loader import load_topology
from toolkit.topology.presets import PROFILES

names = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?", fullmatch=True)
directions = st.builds(
    Direction,
    delay_ms=st.floats(0, 500, allow_nan=False).map(lambda x: round(x, 3)),
    jitter_ms=st.floats(0, 50, allow_nan=False).map(lambda x: round(x, 3)),
    loss_pct=st.floats(0, 100, allow_nan=False).map(lambda x: round(x, 3)),
    loss_burst=st.floats(1, 20, allow_nan=False).map(lambda x: round(x, 2)),
    rate_kbit=st.none() | st.integers(1, 10_000_000),
    reorder=st.booleans(),
)


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    device_names = draw(st.lists(names, min_size=2, max_size=25, unique=True))
    sites = draw(st.lists(names, max_size=3, unique=True))
    devices = {
        n: Device(
            name=n,
            profile=PROFILES[draw(st.sampled_from(sorted(PROFILES)))],
            site=draw(st.sampled_from(sites)) if sites else None,
        )
        for n in device_names
    }
    # A random spanning tree keeps the data plane connected; extra edges make it a mesh.
    pairs = {frozenset((n, draw(st.sampled_from(device_names[:i])))) for i, n in enumerate(device_names) if i}
    extra = draw(st.lists(st.tuples(st.sampled_from(device_names), st.sampled_from(device_names)), max_size=15))
    pairs |= {frozenset(p) for p in extra if p[0] != p[1]}
    links = []
    for pair in sorted(pairs, key=sorted):
        a, b = sorted(pair)
        fwd = draw(directions)
        rev = fwd if draw(st.booleans()) else draw(directions)
        links.append(Link(a=a, b=b, forward=fwd, reverse=rev, preset="ideal", up=draw(st.booleans())))
    return Topology(name=draw(names), devices=devices, links=tuple(links), sites=tuple(sites))


def _load(tmp_path: Path, text: str) -> Topology:
    path = tmp_path / "gen.yaml"
    path.write_text(text)
    return load_topology(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topo=topologies())
def test_generated_topologies_load_back_unchanged(tmp_path: Path, topo: Topology) -> None:
    loaded = _load(tmp_path, to_yaml(topo))
    assert loaded.devices == topo.devices
    assert {link.key: link for link in loaded.links} == {link.key: link for link in topo.links}
    assert loaded.sites == topo.sites


def _corrupt(kind: str, lines: list[str], index: int) -> tuple[list[str], int]:
    """Corrupt line `index` (a device or link line); return the lines and the 1-based bad line."""
    line = lines[index]
    if kind == "duplicate":
        return lines[: index + 1] + [line] + lines[index + 1 :], index + 2
    if kind == "unknown-key":
        return lines[:index] + [line.replace("{", "{colour: red, ", 1)] + lines[index + 1 :], index + 1
    a, b = re.search(r"between: \[([^,]+), ([^\]]+)\]", line).groups()
    replacements = {
        "unknown-device": f"  - {{between: [{a}, {b}x-unknown]}}",
        "self-link": f"  - {{between: [{a}, {a}]}}",
        "negative-delay": f"  - {{between: [{a}, {b}], delay_ms: -1}}",
        "loss-range": f"  - {{between: [{a}, {b}], loss_pct: 100.5}}",
        "nan": f"  - {{between: [{a}, {b}], jitter_ms: .nan}}",
        "preset": f"  - {{between: [{a}, {b}], link: no-such-preset}}",
    }
    return lines[:index] + [replacements[kind]] + lines[index + 1 :], index + 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topo=topologies(), data=st.data())
def test_each_single_corruption_is_reported_at_its_line(tmp_path: Path, topo: Topology, data: st.DataObject) -> None:
    lines = to_yaml(topo).splitlines()
    device_lines = [i for i, text in enumerate(lines) if re.match(r"^  [a-z][^:]*: \{", text)]
    link_lines = [i for i, text in enumerate(lines) if text.startswith("  - {between:")]
    kind = data.draw(
        st.sampled_from(
            ["duplicate", "unknown-key", "unknown-device", "self-link", "negative-delay", "loss-range", "nan", "preset"]
        )
    )
    # Duplicates and unknown keys are tried on device lines and link lines alike.
    pool = device_lines if kind in ("duplicate", "unknown-key") and data.draw(st.booleans()) else link_lines
    corrupted, bad_line = _corrupt(kind, lines, data.draw(st.sampled_from(pool)))
    try:
        _load(tmp_path, "\n".join(corrupted) + "\n")
    except InputError as exc:
        assert [p.line for p in exc.problems] == [bad_line], (kind, [str(p) for p in exc.problems])
    else:
        raise AssertionError(f"corruption {kind} at line {bad_line} was not reported")
