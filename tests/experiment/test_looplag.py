"""The runner's event-loop lag: a loop blocked for a while shows that much lateness."""

from __future__ import annotations

import asyncio
import time

from toolkit.experiment.looplag import LoopLag


def test_a_blocked_loop_shows_as_lag_and_an_idle_one_does_not_much():
    async def scenario() -> dict[str, float | None]:
        lag = LoopLag(interval_s=0.01).start()
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # the loop is blocked: the sampler's sleep ends 0.29 s late at least
        await asyncio.sleep(0.1)
        await lag.stop()
        assert len(lag.samples_s) >= 5
        return lag.summary()

    s = asyncio.run(scenario())
    assert s["runner_lag_max_s"] is not None and s["runner_lag_max_s"] >= 0.25
    assert s["runner_lag_p50_s"] is not None and s["runner_lag_p50_s"] < s["runner_lag_max_s"]


def test_no_samples_means_unknown():
    assert LoopLag().summary() == {"runner_lag_p50_s": None, "runner_lag_p99_s": None, "runner_lag_max_s": None}
