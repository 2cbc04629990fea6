"""Staying inside an endpoint's limits: token buckets for requests and tokens per minute, and the wait
before a retry (exponential backoff with full jitter, never shorter than the server's Retry-After)."""

from __future__ import annotations

import asyncio
import random
import time


class TokenBucket:
    """Refills at `per_minute / 60` units a second up to `capacity`; `take` waits while the level is
    negative or short of the amount. Spending more than the level (tokens counted after a reply) is
    allowed and paid back by waiting, so a large reply slows the next requests rather than failing."""

    def __init__(self, per_minute: float, capacity: float | None = None) -> None:
        self.rate = per_minute / 60.0
        # a tenth of a minute's allowance as burst (at least one unit): smooth enough for per-second windows
        self.capacity = max(1.0, capacity if capacity is not None else per_minute / 10.0)
        self.level = self.capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now

    async def take(self, amount: float = 1.0) -> None:
        """Wait until `amount` (at most the capacity) is available, then remove it."""
        amount = min(amount, self.capacity)
        async with self._lock:  # first come, first served
            while True:
                self._refill()
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)

    async def wait_positive(self) -> None:
        """Wait until the level is above zero (for spending an amount known only afterwards)."""
        async with self._lock:
            while True:
                self._refill()
                if self.level > 0:
                    return
                await asyncio.sleep(-self.level / self.rate + 1e-3)

    def spend(self, amount: float) -> None:
        """Remove `amount` now, going below zero if need be."""
        self._refill()
        self.level -= amount


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry): uniform in
    [0, min(max_s, base_s * 2**(attempt-1))] ("full jitter"), but at least what the server asked for."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    delay = rng.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
