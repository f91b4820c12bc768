"""Per-sender sending limit: a token bucket (SPEC §3: 60 a minute, bursts of 10)."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Per-key token buckets: each key (a sender address) may take ``burst`` messages at once and
    ``per_minute`` on average, refilled continuously. ``clock`` gives seconds (time.monotonic
    unless a test injects one). The reference relay's filtermail uses GCRA with the same two
    numbers; a refusal is a temporary 450 4.7.1.
    """
    def __init__(self, per_minute: int, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0  # tokens per second
        self.burst = float(burst)
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last update)

    def allow(self, key: str) -> bool:
        """Take one token for ``key``: True when there was one (the message may go), False when the
        bucket is empty (the attempt takes nothing). Past 10000 keys, the buckets that have
        refilled are forgotten, so memory stays bounded.
        """
        now = self.clock()
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self.buckets[key] = (tokens, now)
            return False
        self.buckets[key] = (tokens - 1.0, now)
        if len(self.buckets) > 10000:
            self._forget_full(now)
        return True

    def _forget_full(self, now: float) -> None:
        """Drop senders whose bucket has refilled: they are as if never seen."""
        for key, (tokens, last) in list(self.buckets.items()):
            if tokens + (now - last) * self.rate >= self.burst:
                del self.buckets[key]
