"""Which deployer a testbed needs: every device says how it is deployed (`deploy:` in the
topology; ssh devices always `ansible`), and one testbed uses one method."""

from __future__ import annotations

from typing import Any, Literal

from ..errors import InputError

Method = Literal["direct", "ansible"]


def deploy_method(tb: Any) -> Method:
    methods = sorted({d.deploy for d in tb.plan.devices.values()})
    if len(methods) > 1:
        shown = "; ".join(
            m + ": " + ", ".join([n for n, d in tb.plan.devices.items() if d.deploy == m][:3]) for m in methods
        )
        raise InputError(
            f"testbed {tb.id} mixes deploy methods ({shown}): one testbed is deployed either directly or with Ansible"
        )
    return methods[0] if methods else "direct"
