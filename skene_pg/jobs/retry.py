"""When a failed attempt runs again: a loop's `recovery.backoff` (exponential, linear
or fixed, from a base delay), or the worker's default (exponential from
--retry-base). Jitter spreads retries of many jobs that failed together."""

from __future__ import annotations

import random
from dataclasses import dataclass

BACKOFFS = ("exponential", "linear", "fixed")
DEFAULT_RETRY_BASE = 5.0  # seconds: the worker's --retry-base, and a loop's without `base`


@dataclass(frozen=True)
class RetryPolicy:
    backoff: str = "exponential"
    base: float = DEFAULT_RETRY_BASE  # seconds before the first retry
    cap: float = 3600.0  # longest wait between two attempts

    def __post_init__(self) -> None:
        if self.backoff not in BACKOFFS:
            raise ValueError(f"backoff {self.backoff!r} is not one of {', '.join(BACKOFFS)}")

    def nominal(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1-based), before jitter."""
        n = max(1, attempt)
        if self.backoff == "exponential":
            delay = self.base * 2 ** (n - 1)
        elif self.backoff == "linear":
            delay = self.base * n
        else:
            delay = self.base
        return min(self.cap, delay)

    def delay(self, attempt: int) -> float:
        """The wait with jitter: exponential takes full jitter in [d/2, d] (its spread
        grows with d); linear and fixed stay within 10% of d, so the schedule the user
        wrote stays recognisable."""
        delay = self.nominal(attempt)
        if self.backoff == "exponential":
            return random.uniform(delay / 2, delay)
        return random.uniform(delay * 0.9, delay)
