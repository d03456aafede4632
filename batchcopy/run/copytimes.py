"""How long copies take, learnt during the run, so that a copy is polled about once.

A copy's duration grows with what it carries (the service's model: a base plus a time
per frame). The waiter asks `expect(size)` for when to poll first, and reports whether
that poll found the copy over (`hit`) or still running (`miss`, with how long it took
in the end). Copies are grouped by size (the instances a subset copy names, in powers of
two; whole image sets in a group of their own), and each group's estimate tracks the
90th percentile of its durations: a miss raises it (at once to most of the duration seen
when that was much longer), a hit lowers it a little. So about nine copies in ten take
one poll, and a run whose copies slow down (a busier service, bigger image sets) catches
up within a few copies. A group never seen starts from its nearest known group, scaled by
size, or from the waiter's first interval.
"""

from __future__ import annotations

import math

_QUANTILE = 0.9
_STEP = 0.25  # log-space step: a miss x1.2, a hit x0.975
_FLOOR_S = 0.001


def size_group(instances: int | None) -> int | None:
    """None for a whole image set, else the power of two at or above `instances`."""
    if instances is None:
        return None
    return 1 << max(0, int(instances) - 1).bit_length()


class CopyTimes:
    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s = max(_FLOOR_S, first_s)
        self.max_s = max(self.first_s, max_s)
        self._log: dict[int | None, float] = {}

    def expect(self, size: int | None) -> float:
        """Seconds after the answer at which a copy of this size is probably over."""
        group = size_group(size)
        if group in self._log:
            return min(self.max_s, math.exp(self._log[group]))
        known = [g for g in self._log if g is not None]
        if group is not None and known:
            near = min(known, key=lambda g: abs(math.log2(g) - math.log2(group)))
            return min(self.max_s, math.exp(self._log[near]) * max(1.0, group / near))
        if None in self._log:
            return min(self.max_s, math.exp(self._log[None]))
        return self.first_s

    def hit(self, size: int | None, polled_at_s: float) -> None:
        """The first poll, `polled_at_s` after the answer, found the copy over."""
        group = size_group(size)
        now = self._log.get(group, math.log(max(_FLOOR_S, polled_at_s)))
        self._log[group] = max(math.log(_FLOOR_S), now - _STEP * (1 - _QUANTILE))

    def miss(self, size: int | None, first_poll_s: float, ended_by_s: float) -> None:
        """The first poll (at `first_poll_s`) found it running; it was over by `ended_by_s`."""
        group = size_group(size)
        now = self._log.get(group, math.log(max(_FLOOR_S, first_poll_s)))
        raised = now + _STEP * _QUANTILE
        # far off (a first guess, or copies that slowed down a lot): most of the way at once
        seen = math.log(max(_FLOOR_S, 0.8 * ended_by_s))
        self._log[group] = min(math.log(self.max_s * 4), max(raised, seen))
