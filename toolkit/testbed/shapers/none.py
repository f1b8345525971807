"""No shaping: plain veths. Links still go down and up (nftables), so partitions work."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..steps import Phase
from .base import Shaper

if TYPE_CHECKING:
    from ..plan import TestbedPlan


class NoShaper(Shaper):
    name: ClassVar[str] = "none"
    can_shape: ClassVar[bool] = False

    def phases(self, plan: TestbedPlan) -> list[Phase]:
        return []
