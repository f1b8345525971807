"""How late the runner's own event loop wakes up while the workload runs.

Every time the runner records (an acknowledgement, an observer's first sight of an update) is
taken when its event loop gets to it; a loop that wakes up late adds that lateness to latency and
propagation. Its distribution bounds the measurement error of a run (a busy machine, or too many
observers for one process), so it is reported beside the figures it affects.
"""

from __future__ import annotations

import asyncio
import time

from .accounting import percentile

INTERVAL_S = 0.05


class LoopLag:
    """Samples the lateness of a short sleep, every INTERVAL_S, from `start()` to `stop()`."""

    def __init__(self, interval_s: float = INTERVAL_S):
        self.interval_s = interval_s
        self.samples_s: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.interval_s)
            self.samples_s.append(max(0.0, time.monotonic() - t - self.interval_s))

    def start(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def summary(self) -> dict[str, float | None]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "runner_lag_p50_s": r(percentile(self.samples_s, 0.5)),
            "runner_lag_p99_s": r(percentile(self.samples_s, 0.99)),
            "runner_lag_max_s": r(max(self.samples_s, default=None)),
        }
