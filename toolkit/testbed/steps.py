"""The units of a testbed plan: resources, steps and phases (plain data, JSON-able).

The planner and the shapers write them; the executor runs them and journals each step's resources
before the step creates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class Resource:
    """Something the executor creates; journalled before creation, removed by `down`."""

    kind: str  # netns | rootif | cgroup | hostsdir | file | process
    name: str


@dataclass
class Step:
    """One unit of work: a batch of `ip`/`tc` lines, a shell script in a namespace, files, or a
    process to start. Steps of one phase are independent and may run in parallel."""

    kind: Literal["ip", "tc", "sh", "nsops", "files", "wire", "converge", "sshd"]
    netns: str | None = None
    lines: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path -> content (for kind 'files')
    resources: list[Resource] = field(default_factory=list)


@dataclass
class Phase:
    title: str
    steps: list[Step]
    parallel: int = 4  # how many steps may run at once
