"""When to look at each copy in flight, and which to look at next: the waiter's plan,
pure (no I/O, no clock of its own: every method is told the time).

Each copy waited for is a `Watch` with the time its next look is due. `pick(now)` names
the watch to look at with the token the waiter holds: the one due first; when none is due
and a copy slot is wanted in a data store (`slot_wanted`), the oldest copy of that data
store that may have ended by now (it has run as long as the quickest copy of its size
seen; then again every re-look interval): a guess never holds a slot.

When a look is due (durations from run/copytimes.py): first when a copy of its size is
probably over (`expect`); after a look that found it running, again after a tenth of its
expected duration, growing by `backoff` up to `max_interval_s`, so a long copy is looked
at less and less often, bounded by its expected duration (the service's own pattern for
asynchronous work). Until a copy of its size (or a smaller one) has ended, the first look
is at `first_s` and the next ones from a quarter of it, growing; `learnt()` then plans
every copy planned on that first guess again. A watch with a fixed `schedule` (no
prediction) takes its pauses from it instead.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from batchcopy.run.copytimes import CopyTimes

REPOLL_FRACTION = 0.1  # after a look that found it running: a tenth of the expected duration


@dataclass(eq=False)
class Watch:
    seq: int
    datastore_id: str
    image_set_id: str
    version_id: str
    size: int | None
    answered_at: float  # the waiter's clock
    started_at: float | None  # the service's stamp of the copy's start (epoch s)
    deadline: float | None
    future: Any  # the wait's asyncio.Future
    schedule: Iterator[float] | None = None  # fixed pauses (no prediction)
    due: float = 0.0
    plan: int = 0  # bumped when `due` changes: older heap entries are stale
    interval: float = 0.0
    guessed: bool = False  # planned before anything was known about its size
    early_at: float = 0.0  # no early look (a slot wanted) before this
    busy: bool = False  # a look is out
    polls: int = 0
    last_status: str | None = None

    @property
    def open(self) -> bool:
        return not self.future.done()


class LookPlan:
    def __init__(self, times: CopyTimes | None, *, first_s: float, backoff: float,
                 max_interval_s: float) -> None:
        self.times = times
        self.first_s = first_s
        self.backoff = backoff
        self.max_interval_s = max_interval_s
        self.floor = min(0.05, max(first_s, 1e-3))
        self.slot_wanted: Callable[[str], bool] | None = None
        self.watches: dict[int, Watch] = {}  # in the order they were added: oldest first
        self._heap: list[tuple[float, int, int, Watch]] = []

    # ---------------------------------------------------------------- planning
    def add(self, watch: Watch) -> None:
        self.watches[watch.seq] = watch
        if watch.schedule is not None:
            self._set_due(watch, watch.answered_at + next(watch.schedule))
            return
        expected = None if self.times is None else self.times.expect(watch.size)
        watch.guessed = expected is None
        if expected is None:  # nothing known: from a quarter of the first look, growing
            watch.interval = self._clamp(0.25 * self.first_s)
            self._set_due(watch, watch.answered_at + self.first_s)
        else:
            watch.interval = self._clamp(REPOLL_FRACTION * expected)
            self._set_due(watch, watch.answered_at + expected)

    def remove(self, watch: Watch) -> None:
        self.watches.pop(watch.seq, None)

    def running(self, watch: Watch, now: float, *, early: bool) -> None:
        """A look at `now` found the copy still running: plan the next one."""
        watch.busy = False
        watch.early_at = now + watch.interval
        if early:  # the regular look stays where it was
            heapq.heappush(self._heap, (watch.due, watch.seq, watch.plan, watch))
        elif watch.schedule is not None:
            self._set_due(watch, now + next(watch.schedule))
        else:
            self._set_due(watch, now + watch.interval)
            watch.interval = min(self.max_interval_s, watch.interval * self.backoff)

    def learnt(self, now: float) -> None:
        """A size was learnt: copies planned on the first guess are planned again."""
        assert self.times is not None
        for watch in self.watches.values():
            if not watch.guessed or watch.busy or not watch.open:
                continue
            expected = self.times.expect(watch.size)
            if expected is not None:
                watch.guessed = False
                watch.interval = self._clamp(REPOLL_FRACTION * expected)
                self._set_due(watch, max(now, watch.answered_at + expected))

    def _clamp(self, interval: float) -> float:
        return max(self.floor, min(self.max_interval_s, interval))

    def _set_due(self, watch: Watch, due: float) -> None:
        if watch.deadline is not None:
            due = min(due, watch.deadline)
        watch.due = due
        watch.plan += 1
        heapq.heappush(self._heap, (due, watch.seq, watch.plan, watch))

    # ---------------------------------------------------------------- choosing
    def _valid(self, entry: tuple[float, int, int, Watch]) -> bool:
        watch = entry[3]
        return watch.plan == entry[2] and not watch.busy and watch.open \
            and watch.seq in self.watches

    def _top(self) -> tuple[float, int, int, Watch] | None:
        heap = self._heap
        while heap and not self._valid(heap[0]):
            heapq.heappop(heap)
        return heap[0] if heap else None

    def pick(self, now: float, *, take: bool) -> tuple[Watch, bool] | None:
        """(the watch to look at now, whether early), or None if nothing should be looked
        at yet; with `take` the watch is marked busy (its look goes out)."""
        top = self._top()
        if top is not None and top[0] <= now:
            if take:
                heapq.heappop(self._heap)
            watch, early = top[3], False
        else:
            found, _ = self._early(now)
            if found is None:
                return None
            watch, early = found, True
        if take:
            watch.busy = True
        return watch, early

    def _early(self, now: float) -> tuple[Watch | None, float | None]:
        """(the oldest copy, in a data store where a slot is wanted, that may have ended by
        now, if any; the earliest time another may have)."""
        wanted = self.slot_wanted
        if wanted is None or self.times is None:
            return None, None
        asked: dict[str, bool] = {}
        soonest: float | None = None
        for watch in self.watches.values():  # oldest first
            if watch.busy or watch.schedule is not None or not watch.open:
                continue
            ds = watch.datastore_id
            if ds not in asked:
                asked[ds] = wanted(ds)
            if not asked[ds]:
                continue
            quickest = self.times.shortest(watch.size)
            at = max(watch.early_at, watch.answered_at + (
                self.first_s if quickest is None else quickest))
            if at <= now:
                return watch, at
            soonest = at if soonest is None else min(soonest, at)
        return None, soonest

    def next_due(self, now: float) -> float | None:
        """When the next look (regular or early) may go; None: nothing to wait for."""
        top = self._top()
        due = top[0] if top is not None else None
        _, early = self._early(now)
        if early is not None:
            due = early if due is None else min(due, early)
        return due
