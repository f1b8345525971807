"""Counters and the lateness histogram of one link direction, as reported by the `stats` op."""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds (seconds) of the lateness buckets: how long after its scheduled release time a
# frame was actually handed to the kernel. Like Prometheus `le` buckets; the last is +Inf.
LATENESS_BOUNDS_S: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
)


class Lateness:
    __slots__ = ("count", "counts", "max", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENESS_BOUNDS_S) + 1)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, late_s: float) -> None:
        late_s = max(late_s, 0.0)
        self.counts[bisect_left(LATENESS_BOUNDS_S, late_s)] += 1
        self.count += 1
        self.sum += late_s
        self.max = max(self.max, late_s)

    def to_dict(self) -> dict[str, object]:
        cumulative = []
        running = 0
        for c in self.counts:
            running += c
            cumulative.append(running)
        return {
            "le_s": [*LATENESS_BOUNDS_S, "+Inf"],
            "cumulative": cumulative,
            "count": self.count,
            "sum_s": self.sum,
            "max_s": self.max,
        }


class DirectionStats:
    """received = forwarded + lost + queue_drops + dropped_down + send_errors + (still queued).

    Frames lost at the wire's receive ring (`ring_drops`: it was full, or a frame was longer
    than a slot) are not in `received`."""

    __slots__ = (
        "bytes_forwarded",
        "dropped_down",
        "forwarded",
        "lateness",
        "lost",
        "queue_drops",
        "received",
        "send_errors",
    )

    def __init__(self) -> None:
        self.received = 0
        self.forwarded = 0
        self.lost = 0
        self.queue_drops = 0
        self.dropped_down = 0
        self.send_errors = 0
        self.bytes_forwarded = 0
        self.lateness = Lateness()

    def to_dict(self, queued: int, ring_drops: int) -> dict[str, object]:
        return {
            "ring_drops": ring_drops,
            "received": self.received,
            "forwarded": self.forwarded,
            "lost": self.lost,
            "queue_drops": self.queue_drops,
            "dropped_down": self.dropped_down,
            "send_errors": self.send_errors,
            "bytes_forwarded": self.bytes_forwarded,
            "queued": queued,
            "lateness": self.lateness.to_dict(),
        }


def lateness_quantile(hist: dict[str, object], q: float) -> float:
    """An upper bound for the q-quantile of a `lateness` dict (the bucket bound it falls in)."""
    count = int(hist["count"])  # type: ignore[call-overload]
    if count == 0:
        return 0.0
    bounds = hist["le_s"]
    cumulative = hist["cumulative"]
    assert isinstance(bounds, list) and isinstance(cumulative, list)
    want = q * count
    for bound, running in zip(bounds, cumulative, strict=True):
        if running >= want:
            return float(hist["max_s"]) if bound == "+Inf" else float(bound)  # type: ignore[arg-type]
    return float(hist["max_s"])  # type: ignore[arg-type]
