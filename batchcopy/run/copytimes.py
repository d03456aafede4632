"""How long copies take, learnt during the run from the service's own timestamps, so that
a copy is looked at when it should be over.

The service stamps a copy's start (the `updatedAt` of the destination in the CopyImageSet
answer) and its end (the `updatedAt` of the version once it has ended): their difference is
the copy's duration, exact however late the end was noticed. So a late look teaches as
much as a prompt one, and a slow start cannot feed on itself (estimates learnt only from
"was it over at my first look?" grow when looks are late, and late looks follow).

Copies are grouped by size (the instances a subset copy names, in powers of two; whole
image sets in a group of their own) and each group keeps its last `WINDOW` durations:
`expect(size)` is their `QUANTILE` (when to look first), `shortest(size)` the quickest
seen (when a copy of that size may already be over). A group never seen borrows from the
largest known group of smaller copies (a copy is rarely quicker than a smaller one), else
nothing is known (None: the waiter's first interval). Where the service gives no
timestamps the waiter learns its own bound instead (see waiter.py).
"""

from __future__ import annotations

from collections import deque

WINDOW = 64
QUANTILE = 0.75


def size_group(instances: int | None) -> int | None:
    """None for a whole image set, else the power of two at or above `instances`."""
    if instances is None:
        return None
    return 1 << max(0, int(instances) - 1).bit_length()


class CopyTimes:
    def __init__(self, window: int = WINDOW, quantile: float = QUANTILE) -> None:
        if window < 1 or not 0 <= quantile <= 1:
            raise ValueError("need window >= 1 and 0 <= quantile <= 1")
        self.window = window
        self.quantile = quantile
        self._seen: dict[int | None, deque[float]] = {}
        self._cache: dict[int | None, tuple[float, float]] = {}  # group -> (expect, shortest)

    def observe(self, size: int | None, duration_s: float) -> bool:
        """A copy of `size` took `duration_s`. True when its group was unknown until now."""
        group = size_group(size)
        seen = self._seen.get(group)
        new = seen is None
        if seen is None:
            seen = self._seen[group] = deque(maxlen=self.window)
        seen.append(max(0.0, duration_s))
        self._cache.pop(group, None)
        return new

    def _figures(self, size: int | None) -> tuple[float, float] | None:
        group = self._known_group(size_group(size))
        if group is False:
            return None
        found = self._cache.get(group)  # type: ignore[arg-type]
        if found is None:
            ordered = sorted(self._seen[group])  # type: ignore[index]
            at = min(len(ordered) - 1, int(self.quantile * len(ordered)))
            found = self._cache[group] = (ordered[at], ordered[0])  # type: ignore[index]
        return found

    def _known_group(self, group: int | None) -> int | None | bool:
        if group in self._seen:
            return group
        if group is None:
            return False
        smaller = [g for g in self._seen if g is not None and g < group]
        return max(smaller) if smaller else False

    def expect(self, size: int | None) -> float | None:
        """Seconds after its answer by which a copy of this size is probably over (None:
        nothing known yet)."""
        found = self._figures(size)
        return None if found is None else found[0]

    def shortest(self, size: int | None) -> float | None:
        """The quickest copy of this size seen (None: nothing known yet)."""
        found = self._figures(size)
        return None if found is None else found[1]

    def known(self, size: int | None) -> bool:
        return self._figures(size) is not None
