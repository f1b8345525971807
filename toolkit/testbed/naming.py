"""Names of everything a testbed creates, all carrying a recognizable prefix and the testbed id.

A testbed id is 1-5 characters `[a-z][a-z0-9]*`, so every interface name fits Linux's 15-character
limit (IFNAMSIZ - 1) with up to 5-digit indices:

| what                         | where              | name                    |
|------------------------------|--------------------|-------------------------|
| device namespace             | -                  | `cn<id>d<device index>` |
| wire namespace               | -                  | `cn<id>w0`              |
| management bridge            | root namespace     | `cn<id>br`              |
| management veth, root side   | root namespace     | `cn<id>m<device index>` |
| management veth, device side | device namespace   | `mgmt0`                 |
| link end in device a / b     | device namespace   | `<id>l<link index>a/b`  |
| wire-side peer of that end   | wire namespace     | `<id>w<link index>a/b`  |
| cgroup                       | cpu/memory         | `cnlab-<id>/cn<id>d<i>` |
| hosts file                   | /etc/netns/<ns>/   | `hosts`                 |

Resources that live in the root namespace or in shared trees (namespaces, bridge, management
veths, cgroups, /etc/netns entries) all begin with `cn<id>` or `cnlab-<id>`; `owned_by()` checks it.
"""

from __future__ import annotations

import re
import secrets
import string

from ..errors import InputError

ID_RE = re.compile(r"^[a-z][a-z0-9]{0,4}$")
IFNAMSIZ = 15


def check_id(testbed_id: str) -> str:
    if not ID_RE.match(testbed_id):
        raise InputError(
            f"testbed id {testbed_id!r} is not allowed: use 1-5 characters, a lowercase letter "
            "followed by lowercase letters or digits (e.g. 'tb1')"
        )
    return testbed_id


def random_id() -> str:
    """A random 5-character id: 'x' + 4 of [a-z0-9] (1.7 million choices)."""
    alphabet = string.ascii_lowercase + string.digits
    return "x" + "".join(secrets.choice(alphabet) for _ in range(4))


def device_netns(tid: str, index: int) -> str:
    return f"cn{tid}d{index}"


def wire_netns(tid: str, index: int = 0) -> str:
    return f"cn{tid}w{index}"


def bridge(tid: str) -> str:
    return f"cn{tid}br"


def mgmt_peer(tid: str, index: int) -> str:
    return f"cn{tid}m{index}"


def link_end(tid: str, index: int, side: str) -> str:
    return f"{tid}l{index}{side}"


def wire_end(tid: str, index: int, side: str) -> str:
    return f"{tid}w{index}{side}"


def cgroup_name(tid: str) -> str:
    return f"cnlab-{tid}"


_OURS = {
    "netns": r"cn{tid}[dw]\d+",
    "rootif": r"cn{tid}(br|m\d+)",
    "hostsdir": r"/etc/netns/cn{tid}[dw]\d+",
    "cgroup": r"/sys/fs/cgroup/.*/?cnlab-{tid}(/cn{tid}d\d+)?",
    "hostsysctl": r"/run/cnlab/host-sysctl/claims/.*",
}


def owned_by(kind: str, name: str, tid: str) -> bool:
    """Whether a resource name of this kind carries testbed tid's prefix (a sanity check for down)."""
    pattern = _OURS.get(kind)
    if pattern is None:
        return True
    return re.fullmatch(pattern.format(tid=re.escape(tid)), name) is not None
