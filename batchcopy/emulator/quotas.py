"""Server-side request quotas: one token bucket per operation.

Each operation's bucket holds at most `burst` tokens and refills at `rate`
tokens per second (`EmulatorConfig.rate_for`, already divided by time_scale).
A request takes one token, counted when it arrived (its first bytes reached the machine:
arrivals.py), not when the emulator got round to it; with none left it is answered 429
ThrottlingException "Rate exceeded" and nothing is executed. Buckets start full,
so after an idle spell a client may send `burst` requests at once (as AWS allows).
An operation without a quota is never throttled; `enforce_rates=False` turns all
of them off. The buckets are rebuilt (full) whenever the rate settings change.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from batchcopy.emulator.config import DEFAULT_RATES, EmulatorConfig, RateQuota
from batchcopy.emulator.errors import ThrottlingException


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # capacity
    tokens: float
    stamp: float  # clock reading of the last refill

    def take(self, now: float) -> bool:
        """Refill for the time since the last call, then take one token if there is one."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class QuotaEnforcer:
    """Per-operation token buckets reading their settings from a live EmulatorConfig."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket | None] = {}
        self._settings: tuple[object, ...] = ()
        self.throttled: Counter[str] = Counter()
        self._real_clock = True

    def _current_settings(self) -> tuple[object, ...]:
        c = self.config
        rates = tuple(sorted((k, v.rate, v.burst) for k, v in c.rates.items()))
        return (c.time_scale, c.enforce_rates, rates)

    def acquire(self, operation: str, waited_s: float = 0.0) -> None:
        """Take a token for `operation` or raise ThrottlingException (and count it).
        `waited_s`: how long ago the request arrived (ignored on a clock a test drives)."""
        with self._lock:
            settings = self._current_settings()
            if settings != self._settings:
                self._buckets.clear()
                self._settings = settings
            if not self.config.enforce_rates:
                return
            now = self._clock() - (waited_s if self._real_clock else 0.0)
            if operation not in self._buckets:
                quota = self.config.rate_for(operation)
                self._buckets[operation] = (
                    None if quota is None else TokenBucket(quota.rate, quota.burst, quota.burst, now)
                )
            bucket = self._buckets[operation]
            if bucket is None or bucket.take(now):
                return
            self.throttled[operation] += 1
        raise ThrottlingException("Rate exceeded")

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Read `clock` (seconds) from now on, with full buckets: tests drive the buckets
        with a clock they advance, instead of sleeping through real seconds."""
        with self._lock:
            self._clock = clock
            self._real_clock = False
            self._buckets.clear()

    def reset(self, counters: bool = True) -> None:
        """Full buckets again (and, with `counters`, zero throttle counts)."""
        with self._lock:
            self._buckets.clear()
            if counters:
                self.throttled.clear()

    def throttle_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.throttled)

    def effective_rates(self) -> dict[str, RateQuota]:
        """Every known operation's current (time-scaled) quota: for /_emulator/config."""
        ops = set(DEFAULT_RATES) | set(self.config.rates)
        out: dict[str, RateQuota] = {}
        for op in sorted(ops):
            q = self.config.rate_for(op)
            if q is not None:
                out[op] = q
        return out
