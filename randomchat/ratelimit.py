"""Token buckets for per-connection rate limits. Pure: the clock is passed in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens per second refill a bucket of `burst`, full at its first use.

    `take` refuses an action when no token is left; `spend` always pays and may go into
    debt, which says how long to wait (inbound pacing delays reading instead of refusing).
    """

    rate: float
    burst: float
    tokens: float | None = None
    updated: float = 0.0

    def _refill(self, now: float) -> float:
        if self.tokens is None:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens

    def take(self, now: float) -> bool:
        if self._refill(now) >= 1:
            self.tokens -= 1
            return True
        return False

    def spend(self, cost: float, now: float) -> float:
        """Pay `cost`; the seconds until the bucket is out of debt (0 if it is not in debt)."""
        self.tokens = self._refill(now) - cost
        return -self.tokens / self.rate if self.tokens < 0 else 0.0
