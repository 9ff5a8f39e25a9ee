"""Staying inside a provider's limits: concurrency, requests/min, tokens/min, Retry-After.

Token buckets rather than fixed windows: a bucket lets a burst up to its capacity through and
then meters the rest at the refill rate, which is how providers count. A 429's Retry-After
pauses the whole labeler (``pause``), not just the request that got it: the other in-flight
requests would hit the same wall.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``rate`` units per second, holding at most ``capacity`` (a minute's worth by default)."""

    def __init__(self, per_minute: float, capacity: float | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = capacity if capacity is not None else float(per_minute)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` units are available, then take them (FIFO via the lock)."""
        amount = min(amount, self.capacity)  # a request larger than the bucket still goes, alone
        async with self._lock:
            self._refill()
            while self.level < amount:
                await asyncio.sleep((amount - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def give_back(self, amount: float) -> None:
        """Return an over-estimate (tokens are estimated before the call, known after)."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class Limits:
    """One labeler's limits: a concurrency semaphore, optional RPM/TPM buckets, a pause."""

    def __init__(self, *, concurrency: int, rpm: int | None = None, tpm: int | None = None) -> None:
        self.slots = asyncio.Semaphore(concurrency)
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """No request of this labeler starts for ``seconds`` (a server's Retry-After)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def admit(self, estimated_tokens: int) -> None:
        """Wait for the pause, then the request and token budgets of one call."""
        while (delay := self._paused_until - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        if self.requests is not None:
            await self.requests.take(1)
        if self.tokens is not None:
            await self.tokens.take(estimated_tokens)

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        if self.tokens is not None and actual_tokens < estimated_tokens:
            self.tokens.give_back(estimated_tokens - actual_tokens)
