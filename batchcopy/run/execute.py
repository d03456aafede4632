"""One copy unit, from its rows to their statuses.

    versions   carried, pinned (a stale pin: CONFLICT, nothing sent) or read
    prechecks  subset keys against the source (absent: FAILED), rows already present
               in their destination, or for a new image set anywhere in the data store
               (run/present.py) (SKIPPED), merged units cut to the frames allowed per call
    send       the CopyImageSet token, the call journaled SENT, the request (run/calls.py)
    outcome    COPIED -> SUCCEEDED; COPY_FAILED -> FAILED, unless the versions it named had
               been overtaken (a conflict); throttles, 5xx, refused connections -> retried,
               then NOT_RUN (throttles use up no attempt: pacing owns them); proved not
               executed -> retried; unknown -> UNKNOWN; conflicts -> refreshed
               (--on-conflict) or CONFLICT; credentials, access and a wrong set-up (an
               answer that is not the service's, a data store the endpoint does not have)
               -> NOT_RUN and the run stops; any other refusal of a merged call -> split in
               halves and resent, so a bad row never fails the good ones; of a single row ->
               FAILED (unless it was a conflict in disguise, or the concurrent-copy quota)

A row is FAILED only on a final answer from the service about that row; everything that
made no copy for a passing reason is NOT_RUN, and the next run retries it.

A unit's parts (prechecks' cuts, bisections) run one after another in the same task, each
carrying the destination version the previous one wrote.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

from batchcopy.run.calls import CallDriver, Settled
from batchcopy.run.context import RunContext
from batchcopy.journal.journal import RowOutcome
from batchcopy.journal.s3io import StateUnavailable
from batchcopy.plan.units import CopyUnit
from batchcopy.run.precheck import SUBSET_NOT_IN_SOURCE, MetadataCache, check_rows, frames, pack_by_frames
from batchcopy.run.present import Busy, PresenceFinder
from batchcopy.aws.retry import ErrorKind, classify, error_code, error_message, fatal_text
from batchcopy.core.specs import CopySpec, Status
from batchcopy.run.outcome import (QUOTA_CODE, Datastores, Next, Refusal, no_copy, refused,
                                   retry_passing, settled_rows, throttled_out)
from batchcopy.run.versions import StalePin, VersionBook

BUSY_CODE = "ImageSetBusy"  # the presence check met an image set being written
RETRY = object()  # _after(): send the same part again


class Phase(enum.Enum):
    PREPARING = "PREPARING"  # nothing sent: a stop cancels it at once
    COMMITTING = "COMMITTING"  # journaling SENT: a stop lets it finish, then it sends nothing
    OPEN = "OPEN"  # a call is out: a stop gives it --stop-grace


@dataclass
class UnitHandle:
    unit: CopyUnit
    phase: Phase = Phase.PREPARING
    task: asyncio.Task[None] | None = None


@dataclass
class Tally:
    started_at: float
    attempts: int = 0
    throttles: int = 0
    conflicts: int = 0
    sent_at: float | None = None
    quota_refusals: int = 0
    read_failures: int = 0  # reads of versions or metadata that failed for a passing reason
    src_v: str | None = None
    dst_v: str | None = None

    @property
    def spent(self) -> int:
        """Attempts that count against --max-attempts: throttles are pacing's, not the row's."""
        return self.attempts - self.throttles


class Executor:
    def __init__(self, ctx: RunContext, driver: CallDriver, versions: VersionBook,
                 metadata: MetadataCache, presence: PresenceFinder | None = None) -> None:
        self.ctx = ctx
        self.driver = driver
        self.versions = versions
        self.metadata = metadata
        self.presence = presence
        self.datastores = Datastores(ctx.api)

    async def run(self, unit: CopyUnit, handle: UnitHandle) -> None:
        parts = [unit]
        while parts and not self.ctx.stopping.is_set():
            parts[:0] = await self._part(parts.pop(0), handle)

    # ---- one part: one call at a time until its rows have a status ---------------
    async def _part(self, unit: CopyUnit, handle: UnitHandle) -> list[CopyUnit]:
        ctx = self.ctx
        tally = Tally(started_at=ctx.clock())
        rows = list(unit.rows)
        checked_at: tuple[str, str | None] | None = None
        while True:
            handle.phase = Phase.PREPARING
            if ctx.stopping.is_set():
                return []  # the rows stay PENDING: NOT_RUN with the stop's reason
            ds, src, dst = unit.call.datastore_id, unit.call.source_image_set_id, unit.call.destination_image_set_id
            try:
                tally.src_v = await self.versions.resolve(ds, src, unit.call.source_version_id, "source")
                tally.dst_v = (await self.versions.resolve(ds, dst, unit.call.destination_version_id,
                                                           "destination") if dst else None)
                if checked_at != (tally.src_v, tally.dst_v):
                    checked_at = (tally.src_v, tally.dst_v)
                    left, parts = await self._precheck(unit, rows, tally)
                    if parts:
                        return parts  # cut into parts that fit the frames per call
                    if not left:
                        return []
                    if len(left) != len(rows):
                        rows = left
                        unit = unit.with_rows(rows)
            except StalePin as exc:
                # the pin is the first row's: the rows merged after it go on without it
                await self._finish(rows[:1], tally, Status.CONFLICT, error_code="StaleVersionPin",
                                   error_message=str(exc))
                if len(rows) == 1:
                    return []
                rows = rows[1:]
                unit = unit.with_rows(rows).unpinned()
                continue
            except Exception as exc:
                if await self._read_failed(unit, rows, tally, exc) is RETRY:
                    continue
                return []
            copies = ctx.api.limiter.bucket("CopyImageSet")
            due = await copies.acquire_ahead()  # ahead by the journal write below
            granted = copies.now()
            ctx.waiter.nudge()  # maybe nobody waits for the quota now: a slot is wanted
            if ctx.stopping.is_set():
                return []
            handle.phase = Phase.COMMITTING
            request = unit.request(tally.src_v, tally.dst_v)
            sent_at = ctx.clock()
            try:
                call_id = await ctx.journal.call_sent(ctx.run_id, request, [r.key for r in rows],
                                                      sent_at)
            except StateUnavailable as exc:  # not recorded where the state lives: not sent
                ctx.abort(f"the state cannot be written ({exc}); stopped sending")
                return []
            copies.prepared(copies.now() - granted)
            if due > copies.now():  # its time; a stop meanwhile sends nothing (below)
                await asyncio.sleep(due - copies.now())
            tally.attempts += 1
            tally.sent_at = sent_at
            if ctx.stopping.is_set():
                await ctx.journal.call_void(call_id, "not sent: the run stopped before the "
                                                     "request left")
                return []
            handle.phase = Phase.OPEN
            ctx.call_opened()
            try:
                settled = await self.driver.send(call_id, request, sent_at)
            finally:
                ctx.call_closed()
            step = await self._after(unit, rows, tally, settled)
            if step is RETRY:
                continue
            return step  # type: ignore[no-any-return]

    async def _precheck(self, unit: CopyUnit, rows: list[CopySpec],
                        tally: Tally) -> tuple[list[CopySpec], list[CopyUnit]]:
        """(the rows left to send, the parts the unit must be cut into instead, if any);
        the rows that failed or were present are finished here."""
        ctx = self.ctx
        ds, src, dst = unit.call.datastore_id, unit.call.source_image_set_id, unit.call.destination_image_set_id
        check_present = ctx.s.skip_present and (bool(dst) or self.presence is not None)
        if unit.call.copiable_attributes is None and not check_present:
            return rows, []
        assert tally.src_v is not None
        source = await self.metadata.get(ds, src, tally.src_v)
        dest = None
        if check_present and dst and tally.dst_v:
            dest = await ctx.api.get_image_set_metadata(ds, dst, tally.dst_v)
        checked = check_rows(rows, source, dest)
        if check_present and not dst and checked.send:
            checked.send = await self._present_as_new(checked.send, tally, source)
        for row, what in checked.absent:
            ctx.outcome.precheck_failed += 1
            await self._finish([row], tally, Status.FAILED, error_code=SUBSET_NOT_IN_SOURCE,
                               error_message=f"{what} is not in source image set {src} version "
                                             f"{tally.src_v}: nothing was copied for this row")
        for row, n in checked.present:
            ctx.outcome.present_skipped += 1
            await self._finish([row], tally, Status.SKIPPED, evidence=(
                f"all {n} instance(s) this row copies are already in {dst} version {tally.dst_v}, "
                f"with the source's attributes: not copied again (--no-skip-present to copy)"))
        send = checked.send
        if len(send) > 1 and unit.call.copiable_attributes is not None:
            groups = pack_by_frames(send, source, ctx.s.max_frames_per_copy)
            if len(groups) > 1:
                ctx.outcome.splits += 1
                return send, self._parts(unit, groups)
        return send, []

    async def _present_as_new(self, rows: list[CopySpec], tally: Tally,
                              source: dict[str, Any]) -> list[CopySpec]:
        """Rows into new image sets whose copy the data store already holds are SKIPPED
        (run/present.py); the rest are left to send."""
        assert self.presence is not None and tally.src_v is not None
        left: list[CopySpec] = []
        for row in rows:
            try:
                found = await self.presence.find(
                    row.datastore_id, row.source_image_set_id, tally.src_v, source,
                    row.copiable_attributes, primary=row.promote_to_primary, key=row.key)
            except Exception as exc:
                await self._presence_failed(row, tally, exc)
                continue
            if found is None:
                left.append(row)
            elif isinstance(found, Busy):
                await self._finish([row], tally, Status.NOT_RUN, error_code=BUSY_CODE,
                                   error_message=found.evidence)
            else:
                self.ctx.outcome.present_skipped += 1
                await self._finish([row], tally, Status.SKIPPED, evidence=found.evidence,
                                   result_image_set_id=found.image_set_id,
                                   result_version_id=found.version_id)
        return left

    async def _presence_failed(self, row: CopySpec, tally: Tally, exc: Exception) -> None:
        """The presence check could not be made: no copy (one may exist); never FAILED."""
        kind = classify(exc, operation="SearchImageSets")
        if kind is ErrorKind.UNEXPECTED:
            raise exc
        code, msg = error_code(exc), error_message(exc)
        await self._finish([row], tally, Status.NOT_RUN, error_code=code, error_message=(
            f"{msg} (looking for an image set that already holds this row's copy, "
            f"--skip-present: no copy was made; --no-skip-present copies without looking)"))
        if kind is ErrorKind.RUN_FATAL:
            self.ctx.abort(f"{code}: {msg} (the presence check needs SearchImageSets, "
                           f"GetImageSet and GetImageSetMetadata; or pass --no-skip-present)")

    # ---- what a settled call means for its rows ----------------------------------
    async def _after(self, unit: CopyUnit, rows: list[CopySpec], tally: Tally,
                     settled: Settled) -> Any:
        ctx = self.ctx
        stale = await self.driver.stale_or_none(settled)
        verdict = settled_rows(settled, stale)
        if verdict.next is Next.REFUSED:
            return await self._rejected(unit, rows, tally, settled)
        if verdict.carry:
            self._carry(unit, settled)
        if verdict.forget:
            self.versions.forget(unit.call.datastore_id, unit.call.source_image_set_id,
                                 unit.call.destination_image_set_id)
        if verdict.next is Next.REFRESH:
            await self.driver.close(settled)
            return await self._conflict(rows, tally, unit, "ConflictException",
                                        f"the copy ended {settled.workflow_status}: {stale}")
        if verdict.next is Next.AGAIN:
            if tally.spent < ctx.s.max_attempts:
                await self._backoff(tally)
                return RETRY
            await self._finish(rows, tally, Status.NOT_RUN, error_code=settled.error_code,
                               error_message=no_copy(settled.error_message, tally.attempts),
                               evidence=settled.evidence, call_id=settled.call_id)
            return []
        assert verdict.status is not None
        await self._finish(rows, tally, verdict.status, done_call=verdict.done_call,
                           **verdict.fields)
        if verdict.abort:
            ctx.abort(verdict.abort)
        return []

    async def _rejected(self, unit: CopyUnit, rows: list[CopySpec], tally: Tally,
                        settled: Settled) -> Any:
        ctx = self.ctx
        kind, code, msg = settled.kind, settled.error_code or "", settled.error_message or ""
        if kind in (ErrorKind.THROTTLE, ErrorKind.TRANSIENT):
            if kind is ErrorKind.THROTTLE:
                tally.throttles += 1
            if retry_passing(tally.spent, tally.throttles, ctx.s.max_attempts,
                             throttled_out(ctx.api)):
                if not (kind is ErrorKind.THROTTLE and tally.throttles == 1):
                    await self._backoff(tally)
                # a call's first throttle: the limiter has emptied its bucket (and halved the
                # rate if throttles persist), so the next token is the wait; no backoff on top
                return RETRY
            await self._finish(rows, tally, Status.NOT_RUN, error_code=code,
                               error_message=no_copy(msg, tally.attempts), call_id=settled.call_id)
            return []
        if kind is ErrorKind.CONFLICT:
            return await self._conflict(rows, tally, unit, code, msg)
        if kind is ErrorKind.RUN_FATAL or await self.datastores.missing(unit.call.datastore_id, code):
            await self._finish(rows, tally, Status.NOT_RUN, error_code=code,
                               error_message=no_copy(msg, tally.attempts), call_id=settled.call_id)
            ctx.abort(fatal_text(code, msg, self.datastores.seen))
            return []
        # REFUSED. A conflict in disguise first (a service that answers a stale version or a
        # locked image set with a ValidationException): refreshing is all it takes.
        moved = await self._versions_moved(settled)
        if moved is not None:
            return await self._conflict(rows, tally, unit, code, f"{msg} ({moved})")
        over = await self._over_frame_limit(unit, tally)
        if code == QUOTA_CODE:
            tally.quota_refusals += 1
        # the concurrent-copy quota passes; a merged call refused for another reason (or for
        # the quota twice: a lower per-copy limit than ours?) is split (run/outcome.py)
        step = refused(code, len(rows), over, tally.quota_refusals, tally.spent,
                       ctx.s.max_attempts)
        if step is Refusal.RETRY:
            await self._backoff(tally)
            return RETRY
        if step is Refusal.NOT_RUN:
            await self._finish(rows, tally, Status.NOT_RUN, error_code=code,
                               error_message=no_copy(msg, tally.attempts), call_id=settled.call_id)
            return []
        if step is Refusal.SPLIT:
            ctx.outcome.splits += 1
            half = (len(rows) + 1) // 2
            return self._parts(unit, [rows[:half], rows[half:]])
        await self._finish(rows, tally, Status.FAILED, error_code=code, error_message=msg,
                           call_id=settled.call_id)
        return []

    async def _conflict(self, rows: list[CopySpec], tally: Tally, unit: CopyUnit, code: str,
                        msg: str) -> Any:
        tally.conflicts += 1
        self.versions.forget(unit.call.datastore_id, unit.call.source_image_set_id,
                             unit.call.destination_image_set_id)
        s = self.ctx.s
        if s.on_conflict == "refresh" and tally.conflicts <= s.max_conflict_refreshes:
            return RETRY  # re-read the latest versions (a stale pin ends here as CONFLICT)
        await self._finish(rows, tally, Status.CONFLICT, error_code=code, error_message=msg)
        return []

    # ---- helpers --------------------------------------------------------------------
    def _parts(self, unit: CopyUnit, groups: list[list[CopySpec]]) -> list[CopyUnit]:
        """Parts run in order; only the first keeps the pins (the rest carry versions)."""
        parts = [unit.with_rows(groups[0])]
        for group in groups[1:]:
            parts.append(unit.with_rows(group).unpinned())
        return parts

    def _carry(self, unit: CopyUnit, settled: Settled) -> None:
        ds = unit.call.datastore_id
        if settled.result_image_set_id and settled.result_version_id:
            self.versions.carry(ds, settled.result_image_set_id, settled.result_version_id)
        if settled.source_latest:
            self.versions.carry(ds, unit.call.source_image_set_id, settled.source_latest)

    async def _versions_moved(self, settled: Settled) -> str | None:
        """For a refusal: had the versions the call named been overtaken, or was an image
        set locked by another writer? (what a 409 would have said)"""
        req = settled.request
        try:
            for image_set, named in ((req.source_image_set_id, req.source_version_id),
                                     (req.destination_image_set_id, req.destination_version_id)):
                if image_set and named:
                    now = await self.ctx.api.get_image_set(req.datastore_id, image_set)
                    if now.get("imageSetState") == "LOCKED":
                        return f"{image_set} is LOCKED ({now.get('imageSetWorkflowStatus')})"
                    if str(now["versionId"]) != named:
                        return (f"{image_set} is at version {now['versionId']}, not the {named} "
                                f"the call named")
        except Exception as exc:
            if classify(exc, operation="GetImageSet") is ErrorKind.UNEXPECTED:
                raise
        return None

    async def _over_frame_limit(self, unit: CopyUnit, tally: Tally) -> bool | None:
        """Whether the unit selects more frames than a copy may carry; None if unknown."""
        assert tally.src_v is not None
        try:
            doc = await self.metadata.get(unit.call.datastore_id, unit.call.source_image_set_id, tally.src_v)
        except Exception as exc:
            if classify(exc, operation="GetImageSetMetadata") is ErrorKind.UNEXPECTED:
                raise
            return None
        return frames(doc, unit.call.copiable_attributes) > self.ctx.s.max_frames_per_copy

    async def _read_failed(self, unit: CopyUnit, rows: list[CopySpec], tally: Tally,
                           exc: BaseException) -> Any:
        """A read before the call failed (versions, metadata): RETRY it after a pause while
        the reason passes (within --max-attempts; throttles and locks apart), else the rows'
        status. A 409 is a LOCKED image set the wait did not see end: a conflict."""
        kind = classify(exc, operation="GetImageSet")
        code, msg = error_code(exc), error_message(exc)
        if kind is ErrorKind.UNEXPECTED:
            raise exc
        if kind is ErrorKind.CONFLICT:
            return await self._conflict(rows, tally, unit, code, msg)
        if kind in (ErrorKind.THROTTLE, ErrorKind.TRANSIENT):  # ImagingApi's retries ran out
            tally.read_failures += 1
            if tally.read_failures < self.ctx.s.max_attempts:
                await asyncio.sleep(self.ctx.s.backoff.delay(tally.read_failures))
                return RETRY
        fatal = kind is ErrorKind.RUN_FATAL or await self.datastores.missing(unit.call.datastore_id,
                                                                             code)
        if kind is ErrorKind.REFUSED and not fatal:  # e.g. the image set does not exist
            await self._finish(rows, tally, Status.FAILED, error_code=code, error_message=msg)
            return []
        await self._finish(rows, tally, Status.NOT_RUN, error_code=code,
                           error_message=f"{msg} (reading versions or metadata; no copy was made)")
        if fatal:
            self.ctx.abort(fatal_text(code, msg, self.datastores.seen))
        return []

    async def _backoff(self, tally: Tally) -> None:
        await asyncio.sleep(self.ctx.s.backoff.delay(tally.attempts))

    async def _finish(self, rows: list[CopySpec], tally: Tally, status: Status,
                      done_call: tuple[int, str | None, str | None] | None = None,
                      **fields: Any) -> None:
        outcome = RowOutcome(status=status, attempts=tally.attempts, throttles=tally.throttles,
                             conflicts=tally.conflicts, source_version_used=tally.src_v,
                             destination_version_used=tally.dst_v, started_at=tally.started_at,
                             sent_at=tally.sent_at, **fields)
        await self.ctx.finish([r.key for r in rows], outcome, done_call=done_call, rows=rows)
