"""What one run shares between its parts: settings, the services it talks to, the stop
state, and the figures it reports.

`RunContext.finish()` is the one way rows reach a status during a run: it writes the
journal (the only place a row's status is decided), tells the progress display, and keeps
the failure threshold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from batchcopy.aws.api import ImagingApi
from batchcopy.core.limits import CONCURRENT_COPIES_PER_DATASTORE, FRAMES_PER_COPY
from batchcopy.console import logs
from batchcopy.journal.journal import Journal, RowOutcome
from batchcopy.plan.units import MergeLimits
from batchcopy.aws.retry import Backoff
from batchcopy.core.specs import CopySpec, Status
from batchcopy.run.waiter import CopyWaiter

# statuses that count towards --max-failure-rate
BAD_STATUSES = frozenset({Status.FAILED, Status.CONFLICT, Status.UNKNOWN, Status.NOT_RUN})


@dataclass
class RunSettings:
    merge: bool = True
    merge_limits: MergeLimits = field(default_factory=MergeLimits)
    max_frames_per_copy: int = FRAMES_PER_COPY
    max_in_flight_per_datastore: int = CONCURRENT_COPIES_PER_DATASTORE
    max_attempts: int = 5
    on_conflict: str = "refresh"  # refresh | fail
    max_conflict_refreshes: int = 3
    strict_pins: bool = True
    skip_present: bool = True
    max_failure_rate: float = 0.5
    failure_min_rows: int = 1000
    max_duration_s: float | None = None
    stop_grace_s: float = 60.0
    lock_wait_s: float = 600.0
    window_units: int = 20_000
    backoff: Backoff = field(default_factory=Backoff)
    limit: int | None = None  # --limit: a canary of the first N rows (plan/canary.py)


@dataclass
class RunOutcome:
    stop_reason: str | None = None  # None | "aborted" | "interrupted" | "time-limit" | "internal-error" | "limit"
    abort_message: str | None = None
    internal_error: str | None = None
    copy_calls: int = 0
    accepted_calls: int = 0
    units: int = 0
    merged_units: int = 0
    rows_merged: int = 0
    splits: int = 0
    reconciled: int = 0
    precheck_failed: int = 0
    present_skipped: int = 0
    first_copy_at: float | None = None
    last_copy_at: float | None = None
    left_by_limit: int = 0  # rows --limit left for the next run


class Observer(Protocol):
    """What a progress display hears about (progress.Progress implements it)."""

    def rows_finished(self, status: Status, n: int) -> None: ...
    def calls_open(self, n: int) -> None: ...
    def units_queued(self, n: int, rows: int = 0) -> None: ...
    def copy_sent(self, accepted: bool) -> None: ...
    def stopping(self, reason: str) -> None: ...


class _Silent:
    def rows_finished(self, status: Status, n: int) -> None:
        pass

    def calls_open(self, n: int) -> None:
        pass

    def units_queued(self, n: int, rows: int = 0) -> None:
        pass

    def copy_sent(self, accepted: bool) -> None:
        pass

    def stopping(self, reason: str) -> None:
        pass


class OwnImageSets:
    """(data store, image set)s of this run's own calls: those they are writing or reading
    now, and the last `recent` they wrote. Each is another row's copy (or its source):
    the presence check (run/present.py) neither waits for nor reads them. Bounded: an
    older result is read again, and the journal's known results leave it out anyway."""

    def __init__(self, recent: int = 10_000) -> None:
        self.writing: Counter[tuple[str, str]] = Counter()
        self.made: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.recent = recent

    def hold(self, datastore_id: str, image_sets: Iterable[str | None]) -> list[tuple[str, str]]:
        keys = [(datastore_id, i) for i in image_sets if i]
        self.writing.update(keys)
        return keys

    def release(self, keys: Iterable[tuple[str, str]]) -> None:
        for key in keys:
            self.writing[key] -= 1
            if self.writing[key] <= 0:
                del self.writing[key]

    def made_one(self, datastore_id: str, image_set_id: str) -> None:
        key = (datastore_id, image_set_id)
        self.made[key] = None
        self.made.move_to_end(key)
        while len(self.made) > self.recent:
            self.made.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self.writing or key in self.made


STOP_TEXT = {
    "aborted": "run aborted before this row was started: {message}",
    "interrupted": "run interrupted before this row was started",
    "time-limit": "--max-duration reached before this row was started",
    "internal-error": "run stopped by an internal error before this row was started",
    "limit": "left for the next run by --limit (a canary): the same command without --limit "
             "copies it",
}


class RunContext:
    def __init__(self, *, journal: Journal, api: ImagingApi, waiter: CopyWaiter,
                 settings: RunSettings,
                 run_id: int, observer: Observer | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self.api = api
        self.waiter = waiter
        self.s = settings
        self.run_id = run_id
        self.observer: Observer = observer or _Silent()
        self.clock = clock
        self.outcome = RunOutcome()
        self.stopping = asyncio.Event()
        self.on_stop: list[Callable[[], None]] = []  # the dispatcher cancels unsent units
        self.open_calls = 0
        self.own = OwnImageSets()
        self.finished_rows = 0
        self.bad_rows = 0

    # ---- stops ---------------------------------------------------------------
    def request_stop(self, reason: str, message: str | None = None) -> None:
        """Send nothing new from now on (signal, time limit, abort, internal error)."""
        if self.outcome.stop_reason is None or reason == "internal-error":
            self.outcome.stop_reason = reason
            if message is not None:
                self.outcome.abort_message = message
        self.stopping.set()
        self.observer.stopping(self.outcome.stop_reason or reason)
        for hook in list(self.on_stop):
            hook()

    def abort(self, message: str) -> None:
        if self.outcome.stop_reason != "aborted":
            self.request_stop("aborted", message)

    def stop_text(self) -> str:
        template = STOP_TEXT.get(self.outcome.stop_reason or "", "not run")
        return template.format(message=self.outcome.abort_message or "")

    # ---- calls -----------------------------------------------------------------
    def call_opened(self) -> None:
        self.open_calls += 1
        self.observer.calls_open(self.open_calls)

    def call_closed(self) -> None:
        self.open_calls = max(0, self.open_calls - 1)
        self.observer.calls_open(self.open_calls)

    def hold(self, datastore_id: str, image_sets: Iterable[str | None]) -> list[tuple[str, str]]:
        """Note image sets one of this run's calls is writing (or copying from)."""
        return self.own.hold(datastore_id, image_sets)

    def release(self, keys: Iterable[tuple[str, str]]) -> None:
        self.own.release(keys)

    def copy_call_made(self, accepted: bool) -> None:
        now = self.clock()
        self.outcome.copy_calls += 1
        self.observer.copy_sent(accepted)
        if accepted:
            self.outcome.accepted_calls += 1
            if self.outcome.first_copy_at is None:
                self.outcome.first_copy_at = now
            self.outcome.last_copy_at = now

    # ---- rows --------------------------------------------------------------------
    async def finish(self, keys: Sequence[str], outcome: RowOutcome, *,
                     done_call: tuple[int, str | None, str | None] | None = None,
                     rows: Sequence[CopySpec] | None = None) -> None:
        """Rows `keys` (the CopySpecs `rows`, when the caller has them: for the log) reach
        `outcome` in the journal; the display, the log and the failure threshold hear of it."""
        if outcome.finished_at is None:
            outcome.finished_at = self.clock()
        if outcome.call_id is not None and outcome.call_rows is None:
            outcome.call_rows = len(keys)
        n = await self.journal.finish_rows(self.run_id, keys, outcome, done_call=done_call)
        self.finished_rows += n
        if outcome.status in BAD_STATUSES:
            self.bad_rows += n
        self.observer.rows_finished(outcome.status, n)
        self._log_rows(keys, outcome, rows)
        s = self.s
        if (self.finished_rows >= s.failure_min_rows
                and self.bad_rows > s.max_failure_rate * self.finished_rows):
            self.abort(f"failure threshold: {self.bad_rows} of {self.finished_rows} finished "
                       f"rows did not succeed (more than {s.max_failure_rate:.0%})")

    def _log_rows(self, keys: Sequence[str], outcome: RowOutcome,
                  rows: Sequence[CopySpec] | None) -> None:
        status = outcome.status.value
        if not logs.enabled(logging.INFO if status in logs.GOOD else logging.WARNING):
            return
        if rows is not None:
            names: list[tuple[str, int | None]] = [(r.row_id, r.manifest_row) for r in rows]
        else:  # a call settled for an earlier run: the journal knows its rows
            known = self.journal.row_names(keys)
            names = [known.get(k, (k, None)) for k in keys]
        latency = (outcome.finished_at - outcome.sent_at
                   if outcome.finished_at is not None and outcome.sent_at is not None else None)
        logs.log_rows(names, status, error_code=outcome.error_code,
                      error_message=outcome.error_message, call_id=outcome.call_id,
                      latency_s=latency, evidence=outcome.evidence)
