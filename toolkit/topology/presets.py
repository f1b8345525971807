"""Built-in hardware profiles and link presets, with where their figures come from.

cpus are in units of one core of the machine that emulates the device (a cgroup CPU quota);
they are an estimate of relative speed, not a clock-for-clock match.
"""

from __future__ import annotations

from .model import Direction, Profile

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "atom-n2600",
            2.0,
            2048,
            "CONFINE research devices (Community-Lab): Intel Atom N2600, 2 cores, 2 GB RAM",
        ),
        Profile(
            "alix",
            0.25,
            256,
            "PC Engines ALIX boards (AMD Geode LX800 500 MHz, 256 MB) used in early CONFINE nodes; "
            "0.25 core is an assumption for a 500 MHz Geode against a current x86 core",
        ),
        Profile(
            "vct",
            0.5,
            128,
            "CONFINE's Virtual CONFINE Testbed (VCT) emulated nodes, 128 MB; 0.5 core is an assumption",
        ),
        Profile(
            "rpi3",
            1.0,
            1024,
            "Raspberry Pi 3 (4x Cortex-A53 1.2 GHz, 1 GB); 1 core is an assumption for its "
            "throughput against a current x86 core",
        ),
        Profile("host", None, None, "no limit: the emulating machine itself"),
    )
}

# One direction of each preset; a link uses the same figures both ways unless told otherwise.
LINK_PRESETS: dict[str, Direction] = {
    "p2p-5ghz": Direction(delay_ms=2, jitter_ms=1, loss_pct=0.5, rate_kbit=50_000),
    "mesh-2.4ghz": Direction(delay_ms=5, jitter_ms=3, loss_pct=3, rate_kbit=10_000),
    "vpn-over-dsl": Direction(delay_ms=30, jitter_ms=10, loss_pct=1, rate_kbit=5_000),
    "lan": Direction(delay_ms=0.2, jitter_ms=0, loss_pct=0, rate_kbit=1_000_000),
    "ideal": Direction(),
}

LINK_PRESET_NOTES: dict[str, str] = {
    "p2p-5ghz": "assumption: a point-to-point 5 GHz backbone hop between two community-network "
    "supernodes (directional antennas, a few km)",
    "mesh-2.4ghz": "assumption: an omnidirectional 2.4 GHz mesh hop between rooftop nodes, as in "
    "FunkFeuer or Freifunk meshes; loss is what is left after MAC-layer retries",
    "vpn-over-dsl": "assumption: a VPN tunnel over consumer DSL joining islands of a community "
    "network (tens of ms, asymmetric last mile averaged)",
    "lan": "a wired Ethernet segment inside one site",
    "ideal": "no delay, no loss, no rate limit: the link as fast as the machine forwards",
}

DEFAULT_PROFILE = "host"
DEFAULT_LINK = "lan"
