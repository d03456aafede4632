"""One run over a staged manifest: settle what earlier runs left open, dispatch the rest,
and make sure every row ends with a status that the next run can trust.

    settle    open calls in the journal (a crash, a stop, an unknown outcome): answered
              ones are waited for; unanswered ones reconciled against the service
              (run/calls.py, run/reconcile.py): adopted and waited for, proved void (rows run
              again), or still unknown (rows UNKNOWN, never resent)
    dispatch  the manifest's runnable rows -> units -> executed under one TaskGroup
    sweep     rows still PENDING with no open call: NOT_RUN, with the reason (RunLimit for
              the rows a --limit canary left for the next run)

An unexpected exception anywhere stops the run at once; then every call this run sent is
settled (or stays open, its rows reported UNKNOWN), never reported NOT_RUN, and the run
ends with the internal-error exit code.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import Callable
from typing import Any

from batchcopy.aws.api import ImagingApi
from batchcopy.core.callstate import CallRecord
from batchcopy.run.calls import CallDriver, Settled
from batchcopy.run.context import Observer, RunContext, RunOutcome, RunSettings
from batchcopy.plan.canary import LIMIT_CODE
from batchcopy.run.dispatch import Dispatcher
from batchcopy.run.execute import Executor
from batchcopy.run.outcome import Next, settled_rows
from batchcopy.journal.journal import Journal, JournalUnwritable, RowOutcome
from batchcopy.run.precheck import MetadataCache
from batchcopy.run.present import PresenceFinder
from batchcopy.run.reconcile import Reconciler
from batchcopy.run.versions import VersionBook
from batchcopy.run.waiter import CopyWaiter

__all__ = ["Runner", "RunSettings", "RunOutcome", "summary_stats", "dumps"]


class Runner:
    def __init__(self, *, journal: Journal, api: ImagingApi, waiter: CopyWaiter,
                 settings: RunSettings,
                 run_id: int, observer: Observer | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self.ctx = RunContext(journal=journal, api=api, waiter=waiter, settings=settings,
                              run_id=run_id, observer=observer, clock=clock)
        self.versions = VersionBook(api, strict_pins=settings.strict_pins,
                                    lock_wait_s=settings.lock_wait_s)
        self.driver = CallDriver(self.ctx, Reconciler(api, lock_wait_s=min(120.0, settings.lock_wait_s)))
        presence = PresenceFinder(api, known=journal.known_results, own=self.ctx.own,
                                  lock_wait_s=min(120.0, settings.lock_wait_s))
        self.executor = Executor(self.ctx, self.driver, self.versions, MetadataCache(api),
                                 presence if settings.skip_present else None)

    @property
    def outcome(self) -> RunOutcome:
        return self.ctx.outcome

    def request_stop(self, reason: str) -> None:
        self.ctx.request_stop(reason)

    async def run(self) -> RunOutcome:
        ctx = self.ctx
        timer = None
        if ctx.s.max_duration_s is not None:
            timer = asyncio.get_running_loop().call_later(
                max(0.0, ctx.s.max_duration_s), ctx.request_stop, "time-limit")
        unwritable = False
        try:
            async with ctx.waiter.running():  # its poller and looks live while the run does
                try:
                    await self.settle_open_calls()
                    if not ctx.stopping.is_set():
                        dispatcher = Dispatcher(ctx, self.executor)
                        await dispatcher.run(self.journal.iter_manifest())
                        if dispatcher.canary is not None and dispatcher.canary.left_out \
                                and ctx.outcome.stop_reason is None:
                            ctx.outcome.stop_reason = "limit"
                except* JournalUnwritable as group:
                    # nothing more can be recorded, so nothing more is sent; calls out stay
                    # open in the journal (SENT or ANSWERED): the next run settles them
                    unwritable = True
                    ctx.abort(str(_first(group)))
                except* Exception as group:
                    ctx.outcome.internal_error = _describe(group)
                    ctx.request_stop("internal-error")
                    if not unwritable:
                        await self._settle_after_internal_error()
        finally:
            if timer is not None:
                timer.cancel()
        limited = ctx.outcome.stop_reason == "limit"
        try:
            left = await self.journal.mark_pending_not_run(ctx.run_id, ctx.stop_text(),
                                                           LIMIT_CODE if limited else None)
        except JournalUnwritable as exc:  # rows stay PENDING: the next run runs them
            ctx.abort(str(exc))
        else:
            if limited:
                ctx.outcome.left_by_limit = left
        return ctx.outcome

    # ---- open calls -------------------------------------------------------------------
    async def settle_open_calls(self, calls: list[CallRecord] | None = None, *,
                                honour_stop: bool = True) -> None:
        """Settle `calls` (default: every open call in the journal) together; a stop gives
        them --stop-grace, like copies in flight."""
        ctx = self.ctx
        calls = self.journal.open_calls() if calls is None else calls
        if not calls:
            return
        for call in calls:  # what these calls wrote is read afresh afterwards
            self.versions.forget(call.request.datastore_id, *call.request.image_sets())
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._settle_one(call)) for call in calls]
            stop = tg.create_task(ctx.stopping.wait() if honour_stop
                                  else asyncio.Event().wait())
            try:
                await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
                while not all(t.done() for t in tasks) and not stop.done():
                    await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
                if honour_stop and ctx.stopping.is_set():
                    pending = [t for t in tasks if not t.done()]
                    if pending:
                        _, late = await asyncio.wait(pending, timeout=ctx.s.stop_grace_s)
                        for task in late:
                            task.cancel()
            finally:
                stop.cancel()
        for call in calls:
            self.versions.forget(call.request.datastore_id, *call.request.image_sets())

    async def _settle_one(self, call: CallRecord) -> None:
        ctx = self.ctx
        ctx.call_opened()
        try:
            settled = await self.driver.settle(call)
        finally:
            ctx.call_closed()
        await self._rows_of_settled(call, settled)

    async def _rows_of_settled(self, call: CallRecord, settled: Settled) -> None:
        """What a call settled outside the live path means for its rows (run/outcome.py).
        Rows that must run again (void, or a conflict in disguise) go back to PENDING for
        the dispatcher."""
        ctx, req = self.ctx, call.request
        keys = list(call.row_keys)
        stale = await self.driver.stale_or_none(settled)
        verdict = settled_rows(settled, stale)
        if verdict.next is Next.REFUSED:  # settle() reconciles or waits: never a refusal
            raise AssertionError(f"call {call.call_id}: a resumed call cannot be refused")
        if verdict.next is Next.REFRESH:
            await self.driver.close(settled)
        if verdict.next in (Next.REFRESH, Next.AGAIN):
            await self.journal.reset_rows(keys)
            return
        assert verdict.status is not None
        await ctx.finish(keys, RowOutcome(
            verdict.status, attempts=1, source_version_used=req.source_version_id,
            destination_version_used=req.destination_version_id, sent_at=call.sent_at,
            started_at=call.sent_at, **verdict.fields), done_call=verdict.done_call)
        if verdict.abort:
            ctx.abort(verdict.abort)

    async def _settle_after_internal_error(self) -> None:
        """Every call this run sent and did not settle: settle it now, or leave it open
        (its rows read UNKNOWN, and the next run settles it)."""
        await self.journal.flush()  # writes the cancelled tasks had started are in
        mine = [c for c in self.journal.open_calls() if c.run_id == self.ctx.run_id]
        if not mine:
            return
        try:
            await asyncio.wait_for(self.settle_open_calls(mine, honour_stop=False),
                                   timeout=self.ctx.s.stop_grace_s)
        except (asyncio.TimeoutError, Exception):
            pass  # the calls stay open: UNKNOWN in the report, settled by the next run


def _first(group: BaseException) -> BaseException:
    exc = group
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(group: BaseExceptionGroup) -> str:
    """The first real error of a group, with where it happened (for the summary and stderr)."""
    exc = _first(group)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def summary_stats(outcome: RunOutcome, api_stats: dict[str, Any], configured_copy_rate: float,
                  wall_time_s: float) -> dict[str, Any]:
    """Figures for the summary JSON. The achieved rate counts accepted calls only (a
    throttled attempt is no copy)."""
    achieved = None
    if outcome.accepted_calls > 1 and outcome.first_copy_at and outcome.last_copy_at:
        span = outcome.last_copy_at - outcome.first_copy_at
        achieved = (outcome.accepted_calls - 1) / span if span > 0 else None
    return {
        "stop_reason": outcome.stop_reason,
        "abort_message": outcome.abort_message,
        "internal_error": outcome.internal_error,
        "api": api_stats,
        "copy_calls": outcome.copy_calls,
        "accepted_copy_calls": outcome.accepted_calls,
        "units": outcome.units,
        "merged_calls": outcome.merged_units,
        "rows_in_merged_calls": outcome.rows_merged,
        "split_calls": outcome.splits,
        "reconciled_calls": outcome.reconciled,
        "rows_failed_before_sending": outcome.precheck_failed,
        "rows_already_present": outcome.present_skipped,
        "wall_time_s": round(wall_time_s, 3),
        "copy_rate": {"configured_per_s": configured_copy_rate,
                      "achieved_per_s": None if achieved is None else round(achieved, 4),
                      "ratio": None if achieved is None or not configured_copy_rate
                      else round(achieved / configured_copy_rate, 3)},
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
