"""How long loading and validating a large topology takes.

Generates a 1,000-device community-network-like topology (a grid of sites with mesh links,
mixed presets and profiles, and backbone links), writes it as YAML, and times
`load_topology` (parse + validate + build the model) against a baseline of plain YAML parsing
of the same file (libyaml's CSafeLoader) in the same run, so the ratio is comparable across
machines. Goal (issue 2): under 2 s for 1,000 devices.

    .venv/bin/python benchmarks/topology_load.py [--devices 1000] [--repeat 5] [--record]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from bench_machine import describe

from toolkit.topology.loader import load_topology

PRESETS = ["mesh-2.4ghz", "p2p-5ghz", "lan", "vpn-over-dsl"]
PROFILES = ["alix", "vct", "rpi3", "atom-n2600", "host"]
RESULTS = Path(__file__).resolve().parent / "results" / "topology_load.md"


def generate(devices: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    width = max(2, int(devices**0.5))
    names = [f"d{i}" for i in range(devices)]
    lines = ["name: bench", "defaults: {profile: alix, link: mesh-2.4ghz}", "sites:"]
    sites = [f"s{i}" for i in range(max(1, devices // 25))]
    lines += [f"  {s}: {{}}" for s in sites]
    lines.append("devices:")
    for i, n in enumerate(names):
        lines.append(f"  {n}: {{site: {sites[i * len(sites) // devices]}, profile: {rng.choice(PROFILES)}}}")
    lines.append("links:")
    seen = set()
    for i in range(devices):
        for j in (i + 1, i + width):  # right and down neighbours in the grid
            if j < devices and (j != i + 1 or j % width):
                seen.add((i, j))
        if rng.random() < 0.2:
            j = rng.randrange(devices)
            if j != i and (min(i, j), max(i, j)) not in seen:
                seen.add((min(i, j), max(i, j)))
    for i, j in sorted(seen):
        if rng.random() < 0.1:
            lines.append(
                f"  - {{between: [{names[i]}, {names[j]}], delay_ms: {rng.randint(1, 40)}, "
                f"loss_pct: {rng.randint(0, 5)}, forward: {{rate_kbit: {rng.randint(1000, 50000)}}}}}"
            )
        else:
            lines.append(f"  - {{between: [{names[i]}, {names[j]}], link: {rng.choice(PRESETS)}}}")
    lines.append("federation: {image: p2pvalue, on: all}")
    return "\n".join(lines) + "\n"


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--record", action="store_true", help=f"append the figures to {RESULTS}")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(generate(args.devices))
        topo = load_topology(path)
        baseline = timed(lambda: yaml.load(path.read_text(), Loader=yaml.CSafeLoader), args.repeat)
        loading = timed(lambda: load_topology(path), args.repeat)
    med, base = statistics.median(loading), statistics.median(baseline)
    row = (
        f"| {datetime.now(UTC):%Y-%m-%d} | {describe()} | {len(topo.devices)} | {len(topo.links)} | {med:.3f} s "
        f"| {min(loading):.3f} s | {base:.3f} s | {med / base:.1f}x |"
    )
    print(
        f"devices {len(topo.devices)}, links {len(topo.links)}: load_topology median {med:.3f} s "
        f"(min {min(loading):.3f} s); plain YAML parse {base:.3f} s; ratio {med / base:.1f}x; goal < 2 s"
    )
    if args.record:
        if not RESULTS.exists():
            RESULTS.write_text(
                "# Loading and validating a generated topology\n\n"
                "`.venv/bin/python benchmarks/topology_load.py --record` (median of 5 runs). The baseline is\n"
                "libyaml parsing the same file with no validation, in the same run. Goal: < 2 s for 1,000 devices.\n\n"
                "| date | machine | devices | links | load_topology median | min | plain YAML parse | ratio |\n"
                "|---|---|---|---|---|---|---|---|\n"
            )
        with RESULTS.open("a") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()
