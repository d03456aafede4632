"""Dispatch copy units as their chains allow, under structured concurrency.

The manifest's rows come from the journal in batches; the planner turns the runnable ones
into units (the DAG of per-image-set chains); `Schedule` says which may start (every unit
they come `after` is terminal, and their data store has a free copy slot). Each started
unit runs in a task of one `asyncio.TaskGroup`, owned here: an unexpected exception in any
of them stops the run at once (the group cancels the others) and reaches the runner, which
settles what was sent. Nothing runs unowned, so nothing fails unseen.

At most `window_units` units are held at a time: a million-row manifest streams. With
--limit, a canary (plan/canary.py) decides which runnable rows are admitted at all.

Stops (signal, time limit, abort): units that have not journaled a call are cancelled at
once (their rows stay PENDING and end NOT_RUN); units with a call out get `--stop-grace`
to see it end, then are cancelled too (their call stays open in the journal: UNKNOWN
until the next run settles it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from batchcopy.run.context import RunContext
from batchcopy.run.execute import Executor, Phase, UnitHandle
from batchcopy.journal.journal import JournalUnwritable, ManifestRow
from batchcopy.plan.canary import Canary
from batchcopy.plan.units import CopyUnit, Planner
from batchcopy.plan.schedule import Schedule


class Dispatcher:
    def __init__(self, ctx: RunContext, executor: Executor) -> None:
        self.ctx = ctx
        self.executor = executor
        s = ctx.s
        self.planner = Planner(merge=s.merge, limits=s.merge_limits)
        self.canary = Canary(s.limit) if s.limit else None  # run --limit
        self.schedule = Schedule(s.max_in_flight_per_datastore)
        self.handles: dict[int, UnitHandle] = {}
        self._changed = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        copies = ctx.api.limiter.bucket("CopyImageSet")
        # a slot is wanted when units wait for one and none waits for the copy quota (the
        # executor nudges the waiter when it takes a copy token): then the waiter looks at
        # the oldest copies in flight first, so that a guess never holds a slot
        ctx.waiter.slot_wanted = lambda ds: not copies.waiting and self.schedule.blocked(ds)

    async def run(self, batches: Iterable[list[ManifestRow]]) -> None:
        ctx = self.ctx
        ctx.on_stop.append(self._cancel_unsent)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for batch in batches:
                    if ctx.stopping.is_set():
                        break
                    self._admit(batch)
                    while len(self.schedule) > ctx.s.window_units and not ctx.stopping.is_set():
                        await self._wait_for_change()
                    await asyncio.sleep(0)
                while len(self.schedule) and not ctx.stopping.is_set():
                    await self._wait_for_change()
                if ctx.stopping.is_set():
                    await self._drain()
        finally:
            self._tg = None
            ctx.on_stop.remove(self._cancel_unsent)

    def _admit(self, batch: list[ManifestRow]) -> None:
        specs = [r.spec for r in batch]
        runnable = [r.status == "PENDING" for r in batch]
        if self.canary is not None:
            runnable = self.canary.select(specs, runnable)
        units = self.planner.add_batch(specs, runnable)
        out = self.ctx.outcome
        for unit in units:
            self.schedule.add(unit)
            out.units += 1
            if len(unit.rows) > 1:
                out.merged_units += 1
                out.rows_merged += len(unit.rows)
        self.ctx.observer.units_queued(len(units), sum(len(u.rows) for u in units))
        self._dispatch()

    def _dispatch(self) -> None:
        if self.ctx.stopping.is_set() or self._tg is None:
            return
        for unit in self.schedule.take_ready():
            handle = UnitHandle(unit)
            self.handles[unit.unit_id] = handle
            handle.task = self._tg.create_task(self._run_unit(unit, handle),
                                               name=f"unit-{unit.unit_id}")
        self.ctx.waiter.nudge()

    async def _run_unit(self, unit: CopyUnit, handle: UnitHandle) -> None:
        try:
            await self.executor.run(unit, handle)
        except asyncio.CancelledError:
            raise
        except JournalUnwritable as exc:  # a full disk is no bug: stop, exit 3
            self.ctx.abort(str(exc))
            raise
        except BaseException:
            self.ctx.request_stop("internal-error")
            raise
        finally:
            self.handles.pop(unit.unit_id, None)
            self.schedule.finish(unit)
            self.ctx.observer.units_queued(-1)
            self._dispatch()
            self._changed.set()

    async def _wait_for_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _cancel_unsent(self) -> None:
        self._changed.set()  # the dispatch loop looks at the stop at once
        current = asyncio.current_task()
        for handle in list(self.handles.values()):
            if handle.phase is Phase.PREPARING and handle.task is not None \
                    and handle.task is not current:
                handle.task.cancel()

    async def _drain(self) -> None:
        """After a stop: calls out get --stop-grace to end, then everything is cancelled."""
        self._cancel_unsent()
        tasks = [h.task for h in self.handles.values() if h.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.ctx.s.stop_grace_s)
        for task in pending:
            task.cancel()
