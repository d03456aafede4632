"""What throttles say about the account's quota: notice, once per operation, that the
service accepts less than the configured rate, and when it refuses everything.

Pacing owns throttles (aws/ratelimit.py: a throttle that is not jitter halves the bucket's
rate, successes climb back), so a quota below the configured `--rate` costs no row an
attempt; but the run then goes at the service's pace, not the one the user planned with,
and the user should hear it once, with the figure to configure:

* `accepted(operation, at)` records when the service accepted a request; the accepted rate
  is the span of the last `window` acceptances (the rate the service let through while the
  bucket pressed against it).
* `throttled(operation, halved, configured)` after a throttle: when the bucket halved (a
  quota, not jitter) and at least `min_accepted` acceptances measure a rate below
  `lower_than` of the configured one, `on_lower(operation, accepted, configured)` is called,
  once per operation and run.
* `streak(operation)`: throttles in a row with no acceptance between them, whatever calls
  they refused. Throttles use up no call's attempts, so a service that refuses every
  request needs another end: a call gives up once the streak reaches `STREAK_LIMIT`.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable

STREAK_LIMIT = 20  # throttles in a row, no request accepted: the quota is ~0 for now


class QuotaWatch:
    def __init__(self, on_lower: Callable[[str, float, float], None] | None = None, *,
                 window: int = 20, min_accepted: int = 8, lower_than: float = 0.8) -> None:
        self.on_lower = on_lower
        self.window = window
        self.min_accepted = min_accepted
        self.lower_than = lower_than
        self._accepted: dict[str, deque[float]] = {}
        self._streak: Counter[str] = Counter()
        self.lower: dict[str, float] = {}  # operation -> accepted rate, once said

    def accepted(self, operation: str, at: float) -> None:
        times = self._accepted.get(operation)
        if times is None:
            times = self._accepted[operation] = deque(maxlen=self.window)
        times.append(at)
        self._streak[operation] = 0

    def rate(self, operation: str) -> float | None:
        """Requests per second the service accepted over the last `window` acceptances."""
        times = self._accepted.get(operation)
        if times is None or len(times) < self.min_accepted or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def throttled(self, operation: str, *, halved: bool, configured: float) -> None:
        self._streak[operation] += 1
        if not halved or operation in self.lower or not math.isfinite(configured):
            return
        rate = self.rate(operation)
        if rate is None or rate >= self.lower_than * configured:
            return
        self.lower[operation] = rate
        if self.on_lower is not None:
            self.on_lower(operation, rate, configured)

    def streak(self, operation: str) -> int:
        return self._streak[operation]

    def exhausted(self, operation: str) -> bool:
        return self._streak[operation] >= STREAK_LIMIT


def lower_text(operation: str, accepted: float, configured: float) -> str:
    """The one line a run says when the quota looks lower than configured."""
    figure = f"{accepted:.3g}"
    return (f"{operation}: the service accepts about {figure}/s and throttles the rest: the "
            f"account's quota looks lower than the {configured:g}/s configured. Pacing follows "
            f"it and no row loses an attempt; to plan with the real figure pass --rate "
            f"{operation}={figure} (or ask AWS Support for the quota you configured)")
