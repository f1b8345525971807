"""One description of the machine a benchmark ran on, for every results file.

This machine is shared and noisy, so the description includes the load just before the run.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    try:  # share of time some runnable task waited for a CPU, over the last 60 s
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        load += f", CPU pressure avg60 {some[2].split('=')[1]}%"
    except (OSError, IndexError):
        pass
    return (
        f"{platform.node()}: {platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}; "
        f"load average before the run: {load}"
    )


def append_results(path: Path, header: str, lines: list[str]) -> None:
    """Append one run's section to a results file, creating the file with its header first."""
    if not path.exists():
        path.write_text(header)
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")
