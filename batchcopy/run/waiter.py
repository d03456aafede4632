"""Wait for asynchronous copies to end, looking at each when it should be over, inside
GetImageSet's quota.

A copy is done when GetImageSet says so: CopyImageSet answers at once with the
destination version LOCKED / COPYING; the copy has ended when that version's
workflow status is no longer an in-progress one (COPIED or COPY_FAILED, or
DELETED if someone removed it meanwhile).

One poller looks after every copy in flight. Each `wait()` adds a watch to the plan
(run/lookplan.py: when each look is due, learnt from the service's own stamps of earlier
copies, and which copy to look at next); the poller sleeps until the next look is due,
takes a GetImageSet token (FIFO with the version reads: the quota is shared) and only then
asks the plan which copy to look at: the one due first, or, when units wait for a copy
slot, the oldest copy that may have ended. A look is one GetImageSet attempt (its token
is taken); a throttle, a transient error or a 409 (a read of a LOCKED image set may
answer one) means "look again when due"; any other error ends that wait.

Each outcome carries the copy's duration as the service has it (end minus start
`updatedAt`) and how long after that end the waiter saw it (`detection_delay_s`: the
time since the answer, on our clock, less the service's duration; no clock skew
enters). `aclose()` ends every pending wait with `WaiterClosed`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batchcopy.aws.client import ImagingApi
from batchcopy.aws.retry import classify, is_locked_read, is_retryable
from batchcopy.run.copytimes import CopyTimes
from batchcopy.run.lookplan import LookPlan, Watch

# Workflow statuses that mean "something is still running on this version".
IN_PROGRESS = frozenset({
    "COPYING", "COPYING_WITH_READ_ONLY_ACCESS", "UPDATING",
    "UPDATING_FOR_STUDY_CONSISTENCY", "DELETING", "IMPORTING",
})


def _ended(state: str, workflow_status: str) -> bool:
    """Whether a version's (state, workflow status) means its copy is over."""
    if state == "DELETED":
        return True
    if workflow_status:
        return workflow_status not in IN_PROGRESS
    return state not in ("", "LOCKED")


def _look_again(exc: BaseException) -> bool:
    """A look that failed this way says nothing about the copy: look again when due."""
    return (is_retryable(classify(exc, operation="GetImageSet"))
            or is_locked_read(exc, "GetImageSet"))  # a 409: still LOCKED


def epoch(value: Any) -> float | None:
    """A service timestamp (datetime or epoch seconds) as epoch seconds; None otherwise."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class WaitTimeout(Exception):
    """The copy was still running when the waiter's timeout ran out."""

    def __init__(self, image_set_id: str, version_id: str, waited_s: float,
                 last_status: str | None) -> None:
        super().__init__(
            f"image set {image_set_id} version {version_id} still "
            f"{last_status or 'unknown'} after {waited_s:.1f}s")
        self.image_set_id = image_set_id
        self.version_id = version_id
        self.waited_s = waited_s
        self.last_status = last_status


class WaiterClosed(Exception):
    """aclose() was called while this wait was pending."""


@dataclass(frozen=True)
class CopyOutcome:
    image_set_id: str
    version_id: str
    image_set_state: str
    workflow_status: str  # "COPIED" | "COPY_FAILED" (or another terminal one, e.g. "DELETED")
    message: str | None
    polls: int
    waited_s: float
    copy_duration_s: float | None = None  # the service's: end updatedAt - start updatedAt
    detection_delay_s: float | None = None  # from that end to our seeing it

    @property
    def succeeded(self) -> bool:
        return self.workflow_status == "COPIED"


@dataclass
class _Looks:
    """The poller's tasks: each look runs on its own, owned here."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()


class CopyWaiter:
    """Looks at copies until they end, one poller for all (see module doc).

    `clock` and `sleep` drive the schedule (tests pass a virtual pair); `slot_wanted(ds)`
    says whether units wait for a copy slot in data store `ds` (the dispatcher sets it, and
    calls `nudge()` when that changes)."""

    def __init__(
        self,
        api: ImagingApi,
        *,
        first_poll_s: float = 1.0,
        backoff_factor: float = 1.5,
        max_interval_s: float = 30.0,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        predict: bool = True,
    ) -> None:
        if first_poll_s < 0 or max_interval_s <= 0 or backoff_factor < 1:
            raise ValueError("need first_poll_s >= 0, max_interval_s > 0, backoff_factor >= 1")
        self.api = api
        self.first_poll_s = first_poll_s
        self.backoff_factor = backoff_factor
        self.max_interval_s = max_interval_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._sleep = sleep
        self.times = CopyTimes() if predict else None
        self.plan = LookPlan(self.times, first_s=first_poll_s, backoff=backoff_factor,
                             max_interval_s=max_interval_s)
        self._closed = False
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._looks = _Looks()
        self.early_looks = 0  # looks made because a slot was wanted (diagnostics)

    def now(self) -> float:
        return self._clock()

    @property
    def looks_out(self) -> int:
        """Looks sent and not answered yet."""
        return len(self._looks.tasks)

    def intervals(self, expected_s: float | None = None) -> Iterator[float]:
        """The pause before each look without a prediction: an endless generator (first,
        then growing)."""
        delay = self.first_poll_s if expected_s is None else min(self.first_poll_s,
                                                                 max(0.0, expected_s))
        growing = max(delay, 1e-3)
        yield min(delay, self.max_interval_s)
        while True:
            growing = min(self.max_interval_s, growing * self.backoff_factor)
            yield growing

    @property
    def slot_wanted(self) -> Callable[[str], bool] | None:
        """slot_wanted(ds): units wait for a copy slot in data store ds (the dispatcher
        sets it, and nudges the waiter when that may have changed)."""
        return self.plan.slot_wanted

    @slot_wanted.setter
    def slot_wanted(self, wanted: Callable[[str], bool] | None) -> None:
        self.plan.slot_wanted = wanted

    def nudge(self) -> None:
        """Something the poller decides on changed (a slot is wanted): look again now."""
        self._wake.set()

    # ---------------------------------------------------------------- waiting
    async def wait(self, datastore_id: str, image_set_id: str, version_id: str, *,
                   expected_s: float | None = None, size: int | None = None,
                   answered_at: float | None = None,
                   started_at: Any = None) -> CopyOutcome:
        """Until the version has ended. `size`: the instances a subset copy carries (None: a
        whole image set), to predict its end from copies of its size; `answered_at` (this
        waiter's clock, default now) when the copy's call was answered; `started_at` the
        service's stamp of the copy's start (the answer's destination updatedAt)."""
        if self._closed:
            raise WaiterClosed("waiter closed")
        now = self._clock()
        answered = now if answered_at is None else min(answered_at, now)
        watch = Watch(
            seq=next(self._seq), datastore_id=datastore_id, image_set_id=image_set_id,
            version_id=version_id, size=size, answered_at=answered, started_at=epoch(started_at),
            deadline=None if self.timeout_s is None else now + self.timeout_s,
            future=asyncio.get_running_loop().create_future(),
            schedule=self.intervals(expected_s) if expected_s is not None or self.times is None
            else None)
        self.plan.add(watch)
        self._wake.set()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll_loop())
        try:
            return await watch.future
        finally:
            self.plan.remove(watch)
            self._wake.set()

    # ---------------------------------------------------------------- the poller
    async def _poll_loop(self) -> None:
        try:
            bucket = self.api.limiter.bucket("GetImageSet")
            plan = self.plan
            while plan.watches and not self._closed:
                self._wake.clear()
                if plan.pick(self._clock(), take=False) is None:
                    await self._sleep_until(plan.next_due(self._clock()))
                    continue
                await bucket.acquire()
                picked = plan.pick(self._clock(), take=True)
                if picked is not None:
                    self.early_looks += picked[1]
                    self._looks.start(self._look(*picked))
                await asyncio.sleep(0)  # let the look leave before the next token
        except BaseException as exc:  # noqa: BLE001 - every wait hears of it
            for watch in list(self.plan.watches.values()):
                if not watch.future.done():
                    watch.future.set_exception(
                        WaiterClosed("waiter closed") if isinstance(exc, asyncio.CancelledError)
                        else exc)
            if not isinstance(exc, Exception):
                raise

    async def _sleep_until(self, at: float | None) -> None:
        if at is None:
            await self._wake.wait()
            return
        delay = at - self._clock()
        if delay <= 0:
            return
        waker = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait({waker, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            sleeper.cancel()

    # ---------------------------------------------------------------- one look
    async def _look(self, watch: Watch, early: bool) -> None:
        try:
            try:
                found: dict[str, Any] | None = await self.api.poll_image_set(
                    watch.datastore_id, watch.image_set_id, watch.version_id)
            except Exception as exc:
                if not _look_again(exc):
                    raise
                found = None
            watch.polls += 1
            now = self._clock()
            if found is not None:
                watch.last_status = str(found.get("imageSetWorkflowStatus") or "")
                state = str(found.get("imageSetState") or "")
                if _ended(state, watch.last_status):
                    self._resolve(watch, found, state, now)
                    return
            if watch.deadline is not None and now >= watch.deadline:
                raise WaitTimeout(watch.image_set_id, watch.version_id,
                                  now - watch.answered_at, watch.last_status)
            self.plan.running(watch, now, early=early)
            self._wake.set()
        except BaseException as exc:  # noqa: BLE001 - the wait hears of it
            if not watch.future.done():
                watch.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def _resolve(self, watch: Watch, found: dict[str, Any], state: str, now: float) -> None:
        waited = now - watch.answered_at
        ended_at = epoch(found.get("updatedAt"))
        duration = None
        if watch.started_at is not None and ended_at is not None:
            duration = min(max(0.0, ended_at - watch.started_at), waited)
        if self.times is not None and watch.schedule is None:
            # without the service's stamps: our own bound (a little less when the first
            # look found it over, so that the estimate can come down)
            learnt = duration if duration is not None else (
                waited * 0.9 if watch.polls == 1 else waited)
            if self.times.observe(watch.size, learnt):
                self.plan.learnt(now)
        watch.future.set_result(CopyOutcome(
            image_set_id=watch.image_set_id,
            version_id=str(found.get("versionId") or watch.version_id),
            image_set_state=state, workflow_status=watch.last_status or state,
            message=found.get("message"), polls=watch.polls, waited_s=waited,
            copy_duration_s=None if duration is None else round(duration, 3),
            detection_delay_s=None if duration is None else round(waited - duration, 3)))

    async def aclose(self) -> None:
        """End every pending wait (they raise WaiterClosed); later waits fail at once."""
        self._closed = True
        for watch in list(self.plan.watches.values()):
            if not watch.future.done():
                watch.future.set_exception(WaiterClosed("waiter closed"))
        self._looks.cancel()
        if self._poller is not None and not self._poller.done():
            self._poller.cancel()
            try:
                await self._poller
            except BaseException:  # noqa: BLE001 - it was cancelled
                pass
        self._wake.set()
