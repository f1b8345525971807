"""What `cnlab doctor --fix` would install, from a set of findings."""

from __future__ import annotations

from toolkit.capabilities import Check, Findings, missing_apt_packages


def test_missing_apt_packages_come_from_failed_checks_only() -> None:
    findings = Findings(
        [
            Check("ip", True, "/usr/sbin/ip", "apt-get install iproute2"),
            Check("nft", False, "not found", "apt-get install nftables"),
            Check("prometheus", False, "not found", "apt-get install prometheus"),
            Check("tc", False, "not found", "apt-get install iproute2"),
            Check("netem", False, "absent", "nothing to install", required=False),
            Check("privileges", False, "not root", "run as root"),
        ]
    )
    assert missing_apt_packages(findings) == ["iproute2", "nftables", "prometheus"]
    assert not findings.ok
    assert Findings([Check("netem", False, "absent", None, required=False)]).ok
