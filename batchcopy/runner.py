"""asyncio orchestration: dispatch copy units as their chains allow, wait for each copy,
carry versions, handle conflicts, ambiguity, stops and aborts; everything journaled.

The shape of a run:

    resume:   open calls left by a crash are settled first (answered -> wait for them;
              sent/ambiguous -> reconcile: adopt, resend later, or UNKNOWN)
    stream:   manifest batches -> journal rows -> Planner units (the DAG of chains)
    dispatch: a unit starts when every unit it comes `after` is terminal and its data
              store has a free copy slot (at most --max-in-flight copies per data store);
              the CopyImageSet token bucket is the only thing that decides when it is sent
    execute:  versions (carried, pinned, or read with GetImageSet) -> journal SENT ->
              CopyImageSet -> ANSWERED -> wait for COPIED / COPY_FAILED -> rows terminal
    finish:   rows never run are NOT_RUN (with the reason), then the report
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from batchcopy.journal import CallRecord, Journal, RowOutcome
from batchcopy.plan import CopyUnit, MergeLimits, Planner, split_unit
from batchcopy.reconcile import SentCopy, Verdict, reconcile
from batchcopy.retry import Backoff, ErrorKind, classify, error_code, error_message
from batchcopy.schedule import Schedule
from batchcopy.specs import CopySpec, Status

RETRY_STATUSES = frozenset({"PENDING", Status.NOT_RUN.value, Status.CONFLICT.value})
OPEN_CALL_EVIDENCE = ("the run stopped while this copy was in progress; its call is open in the "
                      "journal and a resumed run settles it (batchcopy run --resume)")
FAILED_STATUSES = frozenset({Status.FAILED, Status.CONFLICT, Status.UNKNOWN})


@dataclass
class RunSettings:
    merge: bool = True
    merge_limits: MergeLimits = field(default_factory=MergeLimits)
    max_in_flight_per_datastore: int = 100
    max_attempts: int = 5
    on_conflict: str = "refresh"  # refresh | fail
    max_conflict_refreshes: int = 3
    max_failure_rate: float = 0.5
    failure_min_rows: int = 1000
    max_duration_s: float | None = None
    stop_grace_s: float = 60.0
    lock_wait_s: float = 600.0
    window_units: int = 20_000
    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class RunOutcome:
    stop_reason: str | None = None  # None | "aborted" | "interrupted" | "time-limit"
    abort_message: str | None = None
    copy_calls: int = 0
    units: int = 0
    merged_units: int = 0
    rows_merged: int = 0
    splits: int = 0
    reconciled: int = 0
    first_copy_at: float | None = None
    last_copy_at: float | None = None


class RunAborted(Exception):
    pass


@dataclass
class _Attempts:
    started_at: float
    attempts: int = 0
    throttles: int = 0
    conflicts: int = 0
    sent_at: float | None = None
    open_call: int | None = None  # a journaled call whose outcome is not settled yet


class Runner:
    def __init__(self, *, journal: Journal, api: Any, waiter: Any, settings: RunSettings,
                 run_id: int, progress: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self.api = api
        self.waiter = waiter
        self.s = settings
        self.run_id = run_id
        self.progress = progress
        self.clock = clock
        self.outcome = RunOutcome()
        self.planner = Planner(merge=settings.merge, limits=settings.merge_limits)
        self.versions: dict[tuple[str, str], str] = {}
        self.stale_pins: set[str] = set()
        self.known_results: dict[str, set[str]] = {}
        # scheduling state: only units not yet terminal are held
        self.schedule = Schedule(settings.max_in_flight_per_datastore)
        self.running: dict[int, tuple[asyncio.Task[None], _Attempts]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.settled_rows: set[int] = set()  # rows settled before admission (resume)
        self._settling = False
        self._extra_unit_ids = 0
        self.finished_rows = 0
        self.failed_rows = 0
        self.stop_event = asyncio.Event()
        self.wakeup = asyncio.Event()

    # ---- public ----------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop dispatching (signal, time limit): units whose request has not left are
        cancelled (NOT_RUN); copies in flight finish within --stop-grace."""
        if self.outcome.stop_reason is None:
            self.outcome.stop_reason = reason
        self.stop_event.set()
        self.wakeup.set()
        self._cancel_unsent()

    async def run(self, batches: AsyncIterator[list[CopySpec]] | Iterable[list[CopySpec]]) -> RunOutcome:
        self.stale_pins = self.journal.touched_image_sets()
        timer = None
        if self.s.max_duration_s is not None:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self.s.max_duration_s, self.request_stop, "time-limit")
        try:
            await self._settle_open_calls()
            async for batch in _aiter(batches):
                if self.stop_event.is_set():
                    self.journal.register_rows(batch)  # recorded so they are reported NOT_RUN
                    continue
                self._admit(batch)
                while len(self.schedule) > self.s.window_units and not self.stop_event.is_set():
                    await self._wait_for_change()
            while self.schedule and not self.stop_event.is_set():
                await self._wait_for_change()
            await self._drain()
        finally:
            if timer is not None:
                timer.cancel()
        self.journal.mark_pending_not_run(self.run_id, self._stop_text())
        return self.outcome

    def _stop_text(self) -> str:
        return {"aborted": f"run aborted: {self.outcome.abort_message}",
                "interrupted": "run interrupted before this row was started",
                "time-limit": "--max-duration reached before this row was started"}.get(
            self.outcome.stop_reason or "", "not run")

    # ---- admission and scheduling ---------------------------------------
    def _admit(self, batch: list[CopySpec]) -> None:
        prior = self.journal.register_rows(batch)
        todo: list[CopySpec] = []
        again: list[int] = []  # NOT_RUN / CONFLICT rows of an earlier run: attempted again
        for spec in batch:
            status = prior.get(spec.manifest_row, "PENDING")
            if status in RETRY_STATUSES:
                if status != "PENDING":
                    again.append(spec.manifest_row)
                todo.append(spec)
            elif self.progress is not None and spec.manifest_row not in self.settled_rows:
                self.progress.advance(1)
        if again:
            self.journal.reset_rows(again)  # one transaction per batch, not one per row
        for unit in self.planner.add_batch(todo):
            self._add_unit(unit)
        self._dispatch()

    def _add_unit(self, unit: CopyUnit) -> None:
        self.schedule.add(unit)
        self.outcome.units += 1
        if len(unit.rows) > 1:
            self.outcome.merged_units += 1
            self.outcome.rows_merged += len(unit.rows)
        if self.progress is not None:
            self.progress.copies_left += 1

    def _dispatch(self) -> None:
        if self.stop_event.is_set():
            return
        # each started unit holds a copy slot of its data store until it is terminal
        for unit in self.schedule.take_ready():
            att = _Attempts(started_at=self.clock())
            task = asyncio.create_task(self._run_unit(unit, att))
            self.running[unit.unit_id] = (task, att)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _unit_done(self, unit: CopyUnit) -> None:
        self.schedule.finish(unit)
        if self.progress is not None:
            self.progress.copies_left = max(0, self.progress.copies_left - 1)
        self._dispatch()
        self.wakeup.set()

    async def _wait_for_change(self) -> None:
        self.wakeup.clear()
        await self.wakeup.wait()

    async def _drain(self) -> None:
        """After a stop: give in-flight units a bounded time, then cancel them."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=self.s.stop_grace_s
                                        if self.stop_event.is_set() else None)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # ---- one unit ----------------------------------------------------------
    async def _run_unit(self, unit: CopyUnit, att: _Attempts) -> None:
        self.in_flight += 1
        self._show_in_flight()
        try:
            await self._execute(unit, att)
        except asyncio.CancelledError:
            self._mark_cancelled(unit.rows, att)
            raise
        except RunAborted:
            pass
        finally:
            self.running.pop(unit.unit_id, None)
            self.in_flight -= 1
            self._show_in_flight()
            self._unit_done(unit)

    def _mark_cancelled(self, rows: Iterable[CopySpec], att: _Attempts) -> None:
        """A unit cancelled by a stop or an abort: rows whose call is open are UNKNOWN
        (a resumed run settles the call), the others NOT_RUN."""
        if att.open_call is not None:  # the request left: resume must settle it
            self._finish(rows, self._outcome(
                Status.UNKNOWN, att, call_id=att.open_call, evidence=OPEN_CALL_EVIDENCE),
                only_pending=True)
        else:
            self._finish(rows, self._outcome(
                Status.NOT_RUN, att, error_message=self._stop_text()), only_pending=True)

    async def _execute(self, unit: CopyUnit, att: _Attempts) -> None:
        ds = unit.datastore_id
        src, dest = unit.source_image_set_id, unit.destination_image_set_id
        while True:
            if self.stop_event.is_set():  # a stop or an abort: send nothing new
                self._finish(unit.rows, self._outcome(Status.NOT_RUN, att,
                                                      error_message=self._stop_text()))
                return
            try:
                src_v = await self._version(ds, src, unit.source_version_id)
                dest_v = await self._version(ds, dest, unit.destination_version_id) if dest else None
            except Exception as exc:  # reading versions failed for good
                self._fail_on(exc, unit, att, "GetImageSet")
                return
            await self.api.limiter.bucket("CopyImageSet").acquire()
            if self.stop_event.is_set():
                continue  # stopped while waiting for the quota: NOT_RUN above
            att.attempts += 1
            att.sent_at = self.clock()
            call_id = att.open_call = self.journal.call_sent(
                self.run_id, [r.manifest_row for r in unit.rows], datastore_id=ds,
                source_image_set_id=src, source_version_id=src_v,
                destination_image_set_id=dest, destination_version_id=dest_v,
                copiable_attributes=unit.copiable_attributes, force=unit.force,
                promote_to_primary=unit.promote_to_primary, sent_at=att.sent_at)
            try:
                resp = await self.api.copy_image_set(
                    datastore_id=ds, source_image_set_id=src, source_version_id=src_v,
                    destination_image_set_id=dest, destination_version_id=dest_v,
                    copiable_attributes=unit.copiable_attributes, force=unit.force,
                    promote_to_primary=unit.promote_to_primary, paced=False)
            except Exception as exc:
                self._note_copy_call()
                action = await self._copy_failed(exc, unit, att, call_id, src_v, dest_v)
                if action == "retry":
                    continue
                if isinstance(action, Verdict):  # reconciliation adopted the copy
                    await self._await_copy(unit, att, call_id, src_v, dest_v,
                                           action.image_set_id or "", action.version_id or "",
                                           evidence=action.evidence)
                return
            self._note_copy_call()
            props = resp["destinationImageSetProperties"]
            new_id, new_v = props["imageSetId"], props["latestVersionId"]
            self.journal.call_answered(call_id, new_id, new_v)
            self.versions[(ds, src)] = resp["sourceImageSetProperties"]["latestVersionId"]
            await self._await_copy(unit, att, call_id, src_v, dest_v, new_id, new_v)
            return

    async def _copy_failed(self, exc: BaseException, unit: CopyUnit, att: _Attempts,
                           call_id: int, src_v: str, dest_v: str | None) -> str | Verdict | None:
        """Decide what a failed CopyImageSet means: "retry", a Verdict to adopt, or None (done)."""
        kind = classify(exc, operation="CopyImageSet")
        code, msg = error_code(exc), error_message(exc)
        left = att.attempts < self.s.max_attempts
        if kind is ErrorKind.AMBIGUOUS:
            self.journal.call_ambiguous(call_id, code, msg)
            verdict = await self._reconcile_live(unit, att, src_v, dest_v)
            self.outcome.reconciled += 1
            if verdict.happened:
                self.journal.call_answered(call_id, verdict.image_set_id or "",
                                           verdict.version_id or "", state="ADOPTED",
                                           evidence=verdict.evidence)
                return verdict
            if verdict.happened is None:
                self._forget(unit)
                self._finish(unit.rows, self._outcome(
                    Status.UNKNOWN, att, call_id=call_id, src_v=src_v, dest_v=dest_v,
                    error_code=code, error_message=msg, evidence=verdict.evidence))
                return None
            self.journal.call_void(call_id, verdict.evidence)
            att.open_call = None
            if left:
                await asyncio.sleep(self.s.backoff.delay(att.attempts))
                return "retry"
            self._finish(unit.rows, self._outcome(Status.FAILED, att, call_id=call_id,
                                                  src_v=src_v, dest_v=dest_v, error_code=code,
                                                  error_message=msg, evidence=verdict.evidence))
            return None
        self.journal.call_rejected(call_id, code, msg)
        att.open_call = None
        if kind is ErrorKind.THROTTLE or kind is ErrorKind.TRANSIENT:
            if kind is ErrorKind.THROTTLE:
                att.throttles += 1
            if left:
                await asyncio.sleep(self.s.backoff.delay(att.attempts))
                return "retry"
        elif kind is ErrorKind.CONFLICT:
            att.conflicts += 1
            if self.s.on_conflict == "refresh" and att.conflicts <= self.s.max_conflict_refreshes:
                self._forget(unit)  # re-read the latest versions, wait out locks
                return "retry"
            self._finish(unit.rows, self._outcome(Status.CONFLICT, att, call_id=call_id,
                                                  src_v=src_v, dest_v=dest_v, error_code=code,
                                                  error_message=msg))
            return None
        elif kind is ErrorKind.RUN_FATAL:
            self._finish(unit.rows, self._outcome(Status.FAILED, att, call_id=call_id,
                                                  src_v=src_v, dest_v=dest_v, error_code=code,
                                                  error_message=msg))
            self._abort(f"{code}: {msg}")
            raise RunAborted(code)
        elif code == "ServiceQuotaExceededException":
            if "frame" in msg.lower() or "characters" in msg.lower():
                if len(unit.rows) > 1:  # a merged call too large: split it and go on
                    self.outcome.splits += 1
                    await self._execute_halves(unit)
                    return None
            elif left:  # concurrent-copy quota: wait and try again
                await asyncio.sleep(self.s.backoff.delay(att.attempts))
                return "retry"
        self._finish(unit.rows, self._outcome(Status.FAILED, att, call_id=call_id, src_v=src_v,
                                              dest_v=dest_v, error_code=code, error_message=msg))
        return None

    async def _execute_halves(self, unit: CopyUnit) -> None:
        task = asyncio.current_task()
        for half in split_unit(unit, self._next_unit_id):
            half_att = _Attempts(started_at=self.clock())
            if task is not None and unit.unit_id in self.running:
                # a stop or an abort looks here for a call in flight (see _cancel_unsent)
                self.running[unit.unit_id] = (task, half_att)
            try:
                await self._execute(half, half_att)
            except asyncio.CancelledError:
                self._mark_cancelled(half.rows, half_att)
                raise

    async def _await_copy(self, unit: CopyUnit, att: _Attempts, call_id: int, src_v: str,
                          dest_v: str | None, new_id: str, new_v: str,
                          evidence: str | None = None) -> None:
        ds = unit.datastore_id
        try:
            result = await self.waiter.wait(ds, new_id, new_v)
        except Exception as exc:
            kind = classify(exc, operation="GetImageSet")
            self._forget(unit)
            self._finish(unit.rows, self._outcome(
                Status.UNKNOWN, att, call_id=call_id, src_v=src_v, dest_v=dest_v,
                result_id=new_id, result_v=new_v, error_code=error_code(exc),
                error_message=error_message(exc),
                evidence=f"the copy was accepted ({new_id} version {new_v}) but its end was "
                         f"not observed"))
            if kind is ErrorKind.RUN_FATAL:
                self._abort(f"{error_code(exc)}: {error_message(exc)}")
                raise RunAborted(error_code(exc)) from exc
            return
        self.versions[(ds, new_id)] = result.version_id
        if result.workflow_status == "COPIED":
            status, code, msg = Status.SUCCEEDED, None, None
        else:
            status, code, msg = Status.FAILED, result.workflow_status, result.message
        self._finish(unit.rows, self._outcome(
            status, att, call_id=call_id, src_v=src_v, dest_v=dest_v, result_id=new_id,
            result_v=result.version_id, workflow=result.workflow_status, error_code=code,
            error_message=msg, evidence=evidence),
            done_call=(call_id, result.workflow_status, result.message))
        att.open_call = None

    async def _reconcile_live(self, unit: CopyUnit, att: _Attempts, src_v: str,
                              dest_v: str | None) -> Verdict:
        sent = SentCopy(unit.datastore_id, unit.source_image_set_id, src_v,
                        unit.destination_image_set_id, dest_v, unit.copiable_attributes,
                        unit.promote_to_primary, att.sent_at or self.clock())
        return await reconcile(self.api, sent, known_results=self._known(unit.datastore_id),
                               lock_wait_s=self.s.lock_wait_s)

    # ---- resume: calls a crash left open ------------------------------------
    async def _settle_open_calls(self) -> None:
        """Calls earlier runs left open: reconcile the unanswered ones (one at a time, so
        two calls never adopt the same image set), then wait for every copy known to be
        in progress (together). Rows settled here are counted once (settled_rows)."""
        self._settling = True
        waits: list[tuple[CopyUnit, _Attempts, CallRecord, str, str, str | None]] = []
        calls: list[CallRecord] = []
        try:
            calls = self.journal.open_calls()
            for n, call in enumerate(calls):
                if self.stop_event.is_set():  # stopped (time limit, signal) while settling
                    for left in calls[n:]:
                        self._finish(self._rows_as_specs(left), self._outcome(
                            Status.UNKNOWN, _Attempts(started_at=self.clock(), attempts=1,
                                                      sent_at=left.sent_at),
                            call_id=left.call_id, evidence=OPEN_CALL_EVIDENCE),
                            only_pending=True)
                    break
                unit = _unit_from_call(call, self._rows_as_specs(call))
                att = _Attempts(started_at=self.clock(), attempts=1, sent_at=call.sent_at)
                if call.state in ("ANSWERED", "ADOPTED") and call.result_image_set_id:
                    waits.append((unit, att, call, call.result_image_set_id,
                                  call.result_version_id or "", call.evidence))
                    continue
                verdict = await reconcile(self.api, SentCopy.of(call),
                                          known_results=self._known(call.datastore_id),
                                          lock_wait_s=self.s.lock_wait_s)
                self.outcome.reconciled += 1
                if verdict.happened:
                    self.journal.call_answered(call.call_id, verdict.image_set_id or "",
                                               verdict.version_id or "", state="ADOPTED",
                                               evidence=verdict.evidence)
                    waits.append((unit, att, call, verdict.image_set_id or "",
                                  verdict.version_id or "", verdict.evidence))
                elif verdict.happened is False:
                    self.journal.call_void(call.call_id, verdict.evidence)
                    statuses = self.journal.row_statuses(call.manifest_rows)
                    self.journal.reset_rows(m for m in call.manifest_rows
                                            if statuses.get(m) != "SUCCEEDED")
                else:
                    self.journal.call_ambiguous(call.call_id, "Unresolved", verdict.evidence)
                    self._finish(unit.rows, self._outcome(
                        Status.UNKNOWN, att, call_id=call.call_id, src_v=call.source_version_id,
                        dest_v=call.destination_version_id, evidence=verdict.evidence))
            # copies in flight: like any in-flight copy, a stop gives them --stop-grace (_drain)
            tasks = [asyncio.create_task(self._settle_wait(*w)) for w in waits]
            for task in tasks:
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            while not all(t.done() for t in tasks) and not self.stop_event.is_set():
                await self._wait_for_change()
        finally:
            self._settling = False
            for call in calls:  # what these calls wrote is read afresh
                for key in (call.source_image_set_id, call.destination_image_set_id):
                    if key:
                        self.versions.pop((call.datastore_id, key), None)

    async def _settle_wait(self, unit: CopyUnit, att: _Attempts, call: CallRecord, new_id: str,
                           new_v: str, evidence: str | None) -> None:
        att.open_call = call.call_id
        try:
            await self._await_copy(unit, att, call.call_id, call.source_version_id,
                                   call.destination_version_id, new_id, new_v, evidence=evidence)
        except asyncio.CancelledError:
            self._mark_cancelled(unit.rows, att)
            raise
        except RunAborted:
            pass  # recorded by _abort
        finally:
            self.wakeup.set()

    def _rows_as_specs(self, call: CallRecord) -> tuple[CopySpec, ...]:
        # minimal specs: the unit is only used for its rows' manifest numbers here
        return tuple(CopySpec(manifest_row=m, row_id=str(m), datastore_id=call.datastore_id,
                              source_image_set_id=call.source_image_set_id)
                     for m in call.manifest_rows)

    # ---- helpers -----------------------------------------------------------
    async def _version(self, ds: str, image_set_id: str, pin: str | None) -> str:
        key = (ds, image_set_id)
        if key in self.versions:
            return self.versions[key]
        if pin is not None and image_set_id not in self.stale_pins:
            return pin
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.s.lock_wait_s
        delay = 0.05
        while True:
            got = await self.api.get_image_set(ds, image_set_id)
            if got.get("imageSetState") != "LOCKED" or loop.time() + delay > deadline:
                version = str(got["versionId"])
                self.versions[key] = version
                return version
            await asyncio.sleep(delay)  # locked by another writer: wait it out
            delay = min(delay * 2, 5.0)

    def _forget(self, unit: CopyUnit) -> None:
        self.versions.pop((unit.datastore_id, unit.source_image_set_id), None)
        self.stale_pins.add(unit.source_image_set_id)
        if unit.destination_image_set_id:
            self.versions.pop((unit.datastore_id, unit.destination_image_set_id), None)
            self.stale_pins.add(unit.destination_image_set_id)

    def _known(self, ds: str) -> set[str]:
        return self.journal.known_results(ds)

    def _next_unit_id(self) -> int:
        # ids for split halves: outside the planner's range, never scheduled by the DAG
        self._extra_unit_ids += 1
        return 10**12 + self._extra_unit_ids

    def _note_copy_call(self) -> None:
        now = self.clock()
        self.outcome.copy_calls += 1
        if self.outcome.first_copy_at is None:
            self.outcome.first_copy_at = now
        self.outcome.last_copy_at = now

    def _fail_on(self, exc: BaseException, unit: CopyUnit, att: _Attempts, op: str) -> None:
        kind = classify(exc, operation=op)
        self._finish(unit.rows, self._outcome(Status.FAILED, att, error_code=error_code(exc),
                                              error_message=error_message(exc)))
        if kind is ErrorKind.RUN_FATAL:
            self._abort(f"{error_code(exc)}: {error_message(exc)}")
            raise RunAborted(error_code(exc)) from exc

    def _abort(self, message: str) -> None:
        """Stop at once: units whose request has not left are cancelled (NOT_RUN)."""
        if self.outcome.stop_reason != "aborted":
            self.outcome.stop_reason = "aborted"
            self.outcome.abort_message = message
        self.stop_event.set()
        self.wakeup.set()
        self._cancel_unsent()

    def _cancel_unsent(self) -> None:
        """Cancel running units whose request has not left (none open in the journal);
        a unit waiting for its copy's answer or end keeps going."""
        current = asyncio.current_task()
        for task, att in list(self.running.values()):
            if att.open_call is None and task is not current:
                task.cancel()

    def _outcome(self, status: Status, att: _Attempts, *, call_id: int | None = None,
                 src_v: str | None = None, dest_v: str | None = None,
                 result_id: str | None = None, result_v: str | None = None,
                 workflow: str | None = None, error_code: str | None = None,
                 error_message: str | None = None, evidence: str | None = None) -> RowOutcome:
        return RowOutcome(status=status, call_id=call_id, attempts=att.attempts,
                          throttles=att.throttles, conflicts=att.conflicts,
                          source_version_used=src_v, destination_version_used=dest_v,
                          result_image_set_id=result_id, result_version_id=result_v,
                          workflow_status=workflow, error_code=error_code,
                          error_message=error_message, started_at=att.started_at,
                          sent_at=att.sent_at, finished_at=self.clock(), evidence=evidence)

    def _finish(self, rows: Iterable[CopySpec], outcome: RowOutcome, *,
                only_pending: bool = False,
                done_call: tuple[int, str, str | None] | None = None) -> None:
        rows = list(rows)
        numbers = [r.manifest_row for r in rows]
        if only_pending:
            statuses = self.journal.row_statuses(numbers)
            numbers = [m for m in numbers if statuses.get(m) == "PENDING"]
            if not numbers:
                return
        outcome.call_rows = len(rows) if outcome.call_id is not None else None
        self.journal.finish_rows(self.run_id, numbers, outcome, done_call=done_call)
        if self._settling:
            self.settled_rows.update(numbers)
        self.finished_rows += len(numbers)
        if outcome.status in FAILED_STATUSES:
            self.failed_rows += len(numbers)
        if self.progress is not None:
            self.progress.advance(len(numbers))
        if (self.finished_rows >= self.s.failure_min_rows
                and self.failed_rows > self.s.max_failure_rate * self.finished_rows
                and self.outcome.stop_reason != "aborted"):
            self._abort(f"failure threshold: {self.failed_rows} of {self.finished_rows} "
                        f"finished rows failed (more than {self.s.max_failure_rate:.0%})")

    def _show_in_flight(self) -> None:
        if self.progress is not None:
            self.progress.set_in_flight(self.in_flight)


def _unit_from_call(call: CallRecord, rows: tuple[CopySpec, ...]) -> CopyUnit:
    return CopyUnit(unit_id=-call.call_id, rows=rows, datastore_id=call.datastore_id,
                    source_image_set_id=call.source_image_set_id,
                    destination_image_set_id=call.destination_image_set_id,
                    copiable_attributes=call.copiable_attributes, force=call.force,
                    promote_to_primary=call.promote_to_primary,
                    source_version_id=call.source_version_id,
                    destination_version_id=call.destination_version_id, after=())


async def _aiter(batches: Any) -> AsyncIterator[list[CopySpec]]:
    if hasattr(batches, "__aiter__"):
        async for b in batches:
            yield b
    else:
        for b in batches:
            yield b
            await asyncio.sleep(0)


def summary_stats(outcome: RunOutcome, api_stats: dict[str, Any], configured_copy_rate: float,
                  wall_time_s: float) -> dict[str, Any]:
    achieved = None
    if outcome.copy_calls > 1 and outcome.first_copy_at and outcome.last_copy_at:
        span = outcome.last_copy_at - outcome.first_copy_at
        achieved = (outcome.copy_calls - 1) / span if span > 0 else None
    return {
        "stop_reason": outcome.stop_reason,
        "abort_message": outcome.abort_message,
        "api": api_stats,
        "copy_calls": outcome.copy_calls,
        "units": outcome.units,
        "merged_calls": outcome.merged_units,
        "rows_in_merged_calls": outcome.rows_merged,
        "split_calls": outcome.splits,
        "reconciled_calls": outcome.reconciled,
        "wall_time_s": round(wall_time_s, 3),
        "copy_rate": {"configured_per_s": configured_copy_rate,
                      "achieved_per_s": None if achieved is None else round(achieved, 4),
                      "ratio": None if achieved is None or not configured_copy_rate
                      else round(achieved / configured_copy_rate, 3)},
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
