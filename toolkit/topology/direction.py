"""The one codec of a link direction as JSON: partial updates over a base, defaults, validation.

Used by the wire's spec and control protocol, by live link changes (`Testbed.set_link`) and by
`dump`. Raises ValueError with a readable message; callers turn it into their own error.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace

from .model import Direction

DIRECTION_FIELDS = {f.name for f in fields(Direction)}


def direction_from_dict(data: dict[str, object], base: Direction | None = None) -> Direction:
    """A Direction from a (partial) JSON dict, checked; fields not given keep `base`'s values.

    `"rate_kbit": null` means unlimited.
    Raises ValueError with a readable message on unknown fields or bad values.
    """
    if not isinstance(data, dict):
        raise ValueError("a direction must be a JSON object")
    unknown = set(data) - DIRECTION_FIELDS
    if unknown:
        raise ValueError(f"unknown direction field(s): {', '.join(sorted(unknown))}")
    changes: dict[str, object] = {}
    for name, value in data.items():
        if name == "reorder":
            if not isinstance(value, bool):
                raise ValueError("reorder must be true or false")
        elif name == "rate_kbit":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ValueError("rate_kbit must be a positive number or null (unlimited)")
            value = None if value is None else int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
            if name == "loss_pct" and value > 100:
                raise ValueError("loss_pct must be between 0 and 100")
            if name == "loss_burst" and value < 1:
                raise ValueError("loss_burst must be >= 1 (1 = independent loss)")
        changes[name] = value
    return replace(base or Direction(), **changes)  # type: ignore[arg-type]


def direction_to_dict(d: Direction) -> dict[str, object]:
    return {f.name: getattr(d, f.name) for f in fields(Direction)}
