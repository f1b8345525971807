"""Deploy time with Ansible onto emulated devices running sshd, against the direct deployer.

For every size (devices in a line, all `deploy: ansible`), each variant runs on a fresh testbed:

- direct:            the direct deployer (fork launcher) onto the same kind of testbed: the baseline
- linear+pipe:       cnlab deploy (ansible-runner), strategy linear, pipelining on (the default)
- free+pipe:         strategy free
- linear:            pipelining off
- mitogen:           Mitogen's strategy, if `ansible_mitogen` is importable (else reported missing)
- rerun:             the idempotent second run of linear+pipe (0 changed), on the same testbed

Run (never two benchmarks at once; minutes per size on an idle machine):
    flock /tmp/cnlab-bench.lock .venv/bin/python benchmarks/ansible_deploy.py --sizes 3 10 [--variants ...]
Figures go to benchmarks/results/ansible_deploy.md (appended, with date, machine, load, commit).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_machine import describe  # noqa: E402
from toolkit.testbed import naming  # noqa: E402
from toolkit.testbed.testbed import Testbed  # noqa: E402
from toolkit.topology.model import Device, Direction, Link, Profile, Topology  # noqa: E402

VARIANTS = ["direct", "linear+pipe", "free+pipe", "linear", "mitogen"]
RESULTS = Path(__file__).resolve().parent / "results" / "ansible_deploy.md"


def line(n: int) -> Topology:
    host = Profile("host", None, None)
    names = [f"a{i}" for i in range(n)]
    d = Direction(delay_ms=1)
    return Topology(
        f"abench{n}",
        {x: Device(x, host, deploy="ansible") for x in names},
        tuple(Link(a, b, d, d) for a, b in zip(names, names[1:], strict=False)),
    )


def run_variant(n: int, variant: str, artifact) -> dict:
    from toolkit.deploy.ansible import RunOptions, for_testbed

    tb = Testbed.up(line(n), testbed_id=naming.random_id())
    try:
        if variant == "direct":
            from toolkit.deploy.direct import deploy

            t0 = time.monotonic()
            deploy(tb)
            return {"seconds": time.monotonic() - t0, "changed": None}
        if variant == "mitogen":
            try:
                import ansible_mitogen  # type: ignore[import-not-found]  # noqa: F401
            except ImportError:
                return {"seconds": None, "note": "ansible_mitogen not installed"}
        opts = RunOptions(
            strategy="free" if variant.startswith("free") else "linear",
            pipelining=variant.endswith("+pipe") or variant == "mitogen",
            mitogen=variant == "mitogen",
            forks=max(10, n),
        )
        dep = for_testbed(tb)
        t0 = time.monotonic()
        out = dep.deploy(artifact, opts=opts)
        seconds = time.monotonic() - t0
        if not out.result.ok:
            return {"seconds": None, "note": "; ".join(map(str, out.result.failures[:2]))[:200]}
        row = {"seconds": seconds, "changed": out.result.changed}
        if variant == "linear+pipe":
            t0 = time.monotonic()
            again = dep.deploy(artifact, opts=opts)
            row["rerun_s"] = time.monotonic() - t0
            row["rerun_changed"] = again.result.changed
        return row
    finally:
        Testbed.down_id(tb.id)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, sshd)")
    from toolkit.images.wheelhouse import build

    os.environ.setdefault("CNLAB_STATE_DIR", tempfile.mkdtemp(prefix="cnlab-bench-state-"))
    artifact = build("p2pvalue")
    machine = describe()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    for n in args.sizes:
        base = None
        for v in args.variants:
            r = run_variant(n, v, artifact)
            if v == "direct":
                base = r["seconds"]
            ratio = f"{r['seconds'] / base:.1f}x" if base and r.get("seconds") else "-"
            sec = f"{r['seconds']:.1f}" if r.get("seconds") is not None else "-"
            extra = r.get("note", "")
            if "rerun_s" in r:
                extra = f"second run {r['rerun_s']:.1f} s, {r['rerun_changed']} changed"
            rows.append(
                f"| {n} | {v} | {sec} | {ratio} | {r.get('changed', '-') if r.get('changed') is not None else '-'} | {extra} |"
            )
            print(rows[-1], flush=True)
    text = "\n".join(
        [
            f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}",
            "",
            f"Machine: {machine}. Shared with other sessions: figures are noisy.",
            "",
            "| devices | variant | deploy s | vs direct | changed | notes |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Ansible deploy time (benchmarks/ansible_deploy.py)\n\nDeploy until every node "
            "answers /health, on fresh emulated devices running sshd; `direct` is the direct "
            "deployer (fork launcher) on the same kind of testbed, the baseline of the ratio.\n"
        )
    with open(RESULTS, "a") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
