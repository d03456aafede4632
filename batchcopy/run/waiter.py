"""Wait for asynchronous copies to end, polling GetImageSet inside its quota.

A copy is done when GetImageSet says so: CopyImageSet answers at once with the
destination version LOCKED / COPYING; the copy has ended when that version's
workflow status is no longer an in-progress one (COPIED or COPY_FAILED, or
DELETED if someone removed it meanwhile).

Schedule per copy: the first poll when a copy of its size is probably over, as
learnt from the copies before it in the run (run/copytimes.py; `first_poll_s` until
there is something to learn from), or after min(first_poll_s, expected_s) when
the caller says how long to expect; then intervals growing by `backoff_factor`
up to `max_interval_s`, so a long copy is polled less and less often. With the
prediction a copy costs about one poll.

Fairness, and why there is no scheduler loop: each `wait()` sleeps until its
own next due time, then asks `ImagingApi` for GetImageSet, which takes a token
from GetImageSet's FIFO bucket. asyncio's timer heap already wakes the sleepers
in due-time order, and the FIFO bucket keeps that order once they queue for
tokens, so polls of all waiters go out ordered by due time and share the
quota, exactly what a hand-written heap + single loop would do, without a
background task to start, feed, and shut down. When the quota is the
bottleneck, polls simply queue and every copy still gets its turn.

A poll that fails with a throttle or a transient error (after ImagingApi's own
retries), or answers 409 (a service that refuses reads of a LOCKED image set: the
copy is still running), does not end the wait: the copy runs on regardless, so the
waiter polls again at the next due time. Other errors (e.g. ResourceNotFound) are
raised. `aclose()` ends every pending wait with `WaiterClosed`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from batchcopy.aws.client import ImagingApi
from batchcopy.run.copytimes import CopyTimes
from batchcopy.aws.retry import classify, is_locked_read, is_retryable

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

    @property
    def succeeded(self) -> bool:
        return self.workflow_status == "COPIED"


class CopyWaiter:
    """Polls copies until they end; shares GetImageSet's bucket with everyone (see module doc).

    `clock` measures waited time and the timeout; the pauses themselves are
    asyncio sleeps.
    """

    def __init__(
        self,
        api: ImagingApi,
        *,
        first_poll_s: float = 1.0,
        backoff_factor: float = 1.5,
        max_interval_s: float = 30.0,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
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
        self._closed = asyncio.Event()
        self.times = CopyTimes(first_poll_s, max_interval_s) if predict else None

    def intervals(self, expected_s: float | None = None) -> Iterator[float]:
        """The sleep before each poll: an endless generator (first, then growing)."""
        delay = self.first_poll_s if expected_s is None else min(self.first_poll_s,
                                                                 max(0.0, expected_s))
        growing = max(delay, 1e-3)
        yield min(delay, self.max_interval_s)
        while True:
            growing = min(self.max_interval_s, growing * self.backoff_factor)
            yield growing

    def _predicted(self, first_s: float) -> Iterator[float]:
        """The first poll at the predicted end; then, from a quarter of it, growing."""
        yield first_s
        growing = max(first_s * 0.25, 1e-3)
        while True:
            yield growing
            growing = min(self.max_interval_s, growing * self.backoff_factor)

    async def _pause(self, seconds: float) -> None:
        if self._closed.is_set():
            raise WaiterClosed("waiter closed")
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self._closed.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return
        raise WaiterClosed("waiter closed")

    async def wait(self, datastore_id: str, image_set_id: str, version_id: str, *,
                   expected_s: float | None = None, size: int | None = None) -> CopyOutcome:
        """`size`: the instances a subset copy carries (None: a whole image set), to
        predict its end from copies of its size."""
        start = self._clock()
        deadline = None if self.timeout_s is None else start + self.timeout_s
        polls = 0
        last_status: str | None = None
        times = self.times if expected_s is None else None
        first_s = times.expect(size) if times is not None else 0.0
        schedule = self._predicted(first_s) if times is not None else self.intervals(expected_s)
        for interval in schedule:
            if deadline is not None:
                interval = min(interval, max(0.0, deadline - self._clock()))
            await self._pause(interval)
            polls += 1
            try:
                found = await self.api.get_image_set(datastore_id, image_set_id, version_id)
            except Exception as exc:
                if not (is_retryable(classify(exc, operation="GetImageSet"))
                        or is_locked_read(exc, "GetImageSet")):  # a 409: still LOCKED
                    raise
                found = None
            if found is not None:
                last_status = str(found.get("imageSetWorkflowStatus") or "")
                state = str(found.get("imageSetState") or "")
                if _ended(state, last_status):
                    if times is not None:
                        if polls == 1:
                            times.hit(size, first_s)
                        else:
                            times.miss(size, first_s, self._clock() - start)
                    return CopyOutcome(
                        image_set_id=image_set_id,
                        version_id=str(found.get("versionId") or version_id),
                        image_set_state=state,
                        workflow_status=last_status or state,
                        message=found.get("message"),
                        polls=polls,
                        waited_s=self._clock() - start,
                    )
            if deadline is not None and self._clock() >= deadline:
                raise WaitTimeout(image_set_id, version_id, self._clock() - start, last_status)
        raise AssertionError("unreachable: intervals() is endless")

    async def aclose(self) -> None:
        """End every pending wait (they raise WaiterClosed); later waits fail at once."""
        self._closed.set()
