"""The emulator's wall clock: a base clock plus an offset that tests control.

Everything the service stamps (createdAt, updatedAt, deletedAt) and every
modelled duration (a copy, an update, a deletion) reads this clock. Moving it
forward is how a test ages data or lets pending work finish without waiting;
setting a negative offset before seeding makes the seeded data look older once
the offset goes back to 0.

Two clocks are deliberately NOT this one: request quotas use time.monotonic
(quotas.py; a test moving the clock must not refill buckets) and SigV4
verification uses the real time (auth.py; signatures carry real timestamps).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class OffsetClock:
    """`base() + offset_s`. Not thread-safe on its own: the model's lock guards it."""

    base: Callable[[], float] = field(default=time.time)
    offset_s: float = 0.0

    def __call__(self) -> float:
        return self.base() + self.offset_s

    def move(self, offset_s: float | None = None, advance_s: float | None = None) -> None:
        """Set the offset (offset_s), then add advance_s to it; either may be None."""
        for name, value in (("offset_s", offset_s), ("advance_s", advance_s)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
        if offset_s is not None:
            self.offset_s = float(offset_s)
        if advance_s is not None:
            self.offset_s += float(advance_s)

    def reading(self) -> dict[str, float]:
        return {"offset_s": self.offset_s, "now": round(self(), 3)}
