"""Rate limits: token buckets meter requests; a Retry-After pause holds every request."""

from __future__ import annotations

import asyncio
import time

from llmlabel.labelers.limits import Limits, TokenBucket
from llmlabel.labelers.retry import backoff


def test_bucket_lets_a_burst_through_then_meters() -> None:
    async def go() -> float:
        bucket = TokenBucket(per_minute=600, capacity=5)  # 10/s after a burst of 5
        start = time.monotonic()
        for _ in range(10):
            await bucket.take(1)
        return time.monotonic() - start

    assert 0.4 <= asyncio.run(go()) < 1.0


def test_pause_holds_new_requests() -> None:
    async def go() -> float:
        limits = Limits(concurrency=2, rpm=None, tpm=1000)
        limits.pause(0.3)
        start = time.monotonic()
        await limits.admit(10)
        return time.monotonic() - start

    assert asyncio.run(go()) >= 0.29


def test_backoff_is_bounded_and_jittered() -> None:
    draws = {round(backoff(3), 6) for _ in range(20)}
    assert len(draws) > 1 and all(0 <= d <= 2.0 for d in draws)
    assert backoff(30) <= 30.0
