"""What one direction of an emulated link does to a frame: drop it, or say when to send it.

Pure logic, no sockets and no clock of its own: the caller passes `now` (seconds, monotonic),
so the behaviour is repeatable and testable. Order of effects on an arriving frame, as in netem:
link down -> loss -> rate queue (drop when full) -> delay + jitter.
"""

from __future__ import annotations

import math
import random
from enum import Enum

from toolkit.topology.model import Direction

# How much backlog the rate queue may hold, in seconds of transmission at the link rate,
# and at least this many full-size frames so that slow links still pass a small burst.
QUEUE_SECONDS = 0.1
QUEUE_MIN_FRAMES = 8
FULL_FRAME_BYTES = 1514


class Verdict(Enum):
    LOST = "lost"
    QUEUE_DROP = "queue_drops"
    DOWN = "dropped_down"


class LossModel:
    """Independent loss (burst <= 1) or a two-state Gilbert-Elliott chain.

    In the Bad state every frame is lost, in Good none. Leaving Bad has probability r = 1/burst,
    so bursts last `burst` frames on average; entering Bad has q = p*r/(1-p), so the long-run loss
    is p. (If q would exceed 1 -- very high loss with short bursts -- it is capped and the loss
    rate comes out lower than asked.)
    """

    def __init__(self, loss_pct: float, burst: float, rng: random.Random):
        self._rng = rng
        self._p = loss_pct / 100.0
        self._bursty = burst > 1.0 and 0.0 < self._p < 1.0
        self._bad = False
        if self._bursty:
            self._r = 1.0 / burst
            self._q = min(1.0, self._p * self._r / (1.0 - self._p))

    def lose(self) -> bool:
        if self._p <= 0.0:
            return False
        if not self._bursty:
            return self._rng.random() < self._p
        if self._bad:
            self._bad = self._rng.random() >= self._r
        else:
            self._bad = self._rng.random() < self._q
        return self._bad


class Shaper:
    """One direction's state: config, loss chain, rate queue and the last release time."""

    def __init__(self, direction: Direction, rng: random.Random, up: bool = True):
        self.rng = rng
        self.up = up
        self._loss = LossModel(direction.loss_pct, direction.loss_burst, rng)
        self._busy_until = 0.0  # when the rate "serializer" finishes the frames queued so far
        self._last_release = 0.0
        self.direction = direction
        self._derive()

    def _derive(self) -> None:
        # Per-frame work reads these plain floats instead of the dataclass.
        d = self.direction
        self._lossy = d.loss_pct > 0
        self._delay_s = d.delay_ms / 1000.0
        self._jitter_s = d.jitter_ms / 1000.0
        self._bits_per_s = None if d.rate_kbit is None else d.rate_kbit * 1000.0
        self._queue_limit_s = self.queue_limit_s()
        self._fifo = not d.reorder

    def configure(self, direction: Direction) -> None:
        """Change the behaviour at run time. Frames already scheduled keep their times."""
        if (direction.loss_pct, direction.loss_burst) != (
            self.direction.loss_pct,
            self.direction.loss_burst,
        ):
            self._loss = LossModel(direction.loss_pct, direction.loss_burst, self.rng)
        self.direction = direction
        self._derive()

    def queue_limit_s(self) -> float:
        rate = self.direction.rate_kbit
        if rate is None:
            return math.inf
        min_frames_s = QUEUE_MIN_FRAMES * FULL_FRAME_BYTES * 8 / (rate * 1000.0)
        return max(QUEUE_SECONDS, min_frames_s)

    def admit(self, now: float, size: int) -> float | Verdict:
        """The release time (monotonic seconds) for a frame of `size` bytes, or why it is dropped."""
        if not self.up:
            return Verdict.DOWN
        if self._lossy and self._loss.lose():
            return Verdict.LOST
        depart = now
        bits_per_s = self._bits_per_s
        if bits_per_s is not None:
            # A serializer at the link rate (a token bucket with a one-frame bucket): the frame
            # leaves when the ones ahead of it have been sent; the backlog is bounded in time.
            start = self._busy_until if self._busy_until > now else now
            if start - now > self._queue_limit_s:
                return Verdict.QUEUE_DROP
            depart = start + size * 8 / bits_per_s
            self._busy_until = depart
        if self._jitter_s > 0.0:
            delay = self.rng.gauss(self._delay_s, self._jitter_s)
            release = depart + (delay if delay > 0.0 else 0.0)
        else:
            release = depart + self._delay_s
        last = self._last_release
        if release < last:
            if self._fifo:
                # Jitter must not overtake: never release before the frame ahead of this one.
                release = last
        else:
            self._last_release = release
        return release


def make_rng(seed: int, link_id: str, which: str) -> random.Random:
    """A repeatable generator per link and direction (str seeds are hashed with SHA-512)."""
    return random.Random(f"{seed}/{link_id}/{which}")
