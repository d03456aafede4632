"""Drive one journaled CopyImageSet call to where it settles (core/callstate.py's machine).

The same steps serve the live path and a resumed run:

    send()       SENT      -> the request -> ANSWERED | REJECTED | AMBIGUOUS -> ...
    settle()     a call a crash left open: SENT/AMBIGUOUS -> reconcile; ANSWERED/ADOPTED -> wait
    reconcile()  AMBIGUOUS -> ADOPTED (then wait) | VOID | still AMBIGUOUS (unknown)
    wait()       ANSWERED/ADOPTED -> the copy's end (COPIED / COPY_FAILED) or unknown

Each returns a `Settled`: what became of the call. Deciding what that means for its rows
(retry, refresh, split, a status) is the caller's job (run/execute.py, run/runner.py); the call
moves to DONE together with its rows (journal.finish_rows), or alone when its rows go on
to another call (`close()`).

A copy that ended COPY_FAILED may be a conflict in disguise (a service that accepts a stale
version and fails the copy later): `stale_versions()` tells, from what the service shows
now, whether the versions the call named had been overtaken.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from batchcopy.console import logs
from batchcopy.core.callstate import CallRecord, CallState
from batchcopy.run.context import RunContext
from batchcopy.run.reconcile import Reconciler
from batchcopy.aws.retry import ErrorKind, classify, error_code, error_message
from batchcopy.core.specs import CopyRequest


class Ended(enum.Enum):
    DONE = "DONE"  # the copy ended: see workflow_status
    REJECTED = "REJECTED"  # refused without executing: see kind, code, message
    VOID = "VOID"  # proved not executed (reconciliation)
    UNKNOWN = "UNKNOWN"  # may have executed; the call stays open


@dataclass(frozen=True)
class Settled:
    ended: Ended
    call_id: int
    request: CopyRequest
    kind: ErrorKind | None = None
    error_code: str | None = None
    error_message: str | None = None
    result_image_set_id: str | None = None
    result_version_id: str | None = None
    workflow_status: str | None = None
    message: str | None = None
    evidence: str | None = None
    source_latest: str | None = None  # the source's version the answer named
    run_fatal: bool = False  # the error that left it unknown stops the run
    copy_duration_s: float | None = None  # the service's (its start and end updatedAt)
    detection_delay_s: float | None = None  # from the copy's end to our seeing it

    @property
    def copied(self) -> bool:
        return self.ended is Ended.DONE and self.workflow_status == "COPIED"


class CallDriver:
    def __init__(self, ctx: RunContext, reconciler: Reconciler) -> None:
        self.ctx = ctx
        self.reconciler = reconciler
        # one reconciliation at a time: an image set one adopts is known to the next
        self._reconciling = asyncio.Lock()

    async def send(self, call_id: int, request: CopyRequest, sent_at: float) -> Settled:
        token = logs.CALL_ID.set(call_id)  # API log lines name the call
        if logs.enabled(logging.INFO):
            logs.emit(logging.INFO, "call_sent", f"call {call_id} sent: {_describe(request)}",
                      call_id=call_id, source_image_set_id=request.source_image_set_id,
                      destination_image_set_id=request.destination_image_set_id)
        held = self.ctx.hold(request.datastore_id, request.image_sets())
        try:
            settled = await self._send(call_id, request, sent_at, held)
        finally:
            logs.CALL_ID.reset(token)
            self.ctx.release(held)
        _log_settled(settled)
        return settled

    async def _send(self, call_id: int, request: CopyRequest, sent_at: float,
                    held: list[tuple[str, str]]) -> Settled:
        ctx = self.ctx
        try:
            answer = await ctx.api.copy_image_set(request, paced=False)
            answered_at = ctx.waiter.now()
            dest = answer["destinationImageSetProperties"]
            new_id, new_v = str(dest["imageSetId"]), str(dest["latestVersionId"])
            source_latest = str(answer["sourceImageSetProperties"]["latestVersionId"])
        except Exception as exc:
            kind = classify(exc, operation="CopyImageSet")
            code, msg = error_code(exc), error_message(exc)
            if isinstance(exc, (KeyError, TypeError, ValueError)):  # a 200 we cannot read
                kind, code = ErrorKind.AMBIGUOUS, "UnreadableAnswer"
            ctx.copy_call_made(accepted=kind is ErrorKind.AMBIGUOUS)
            if kind is ErrorKind.AMBIGUOUS:
                await ctx.journal.call_ambiguous(call_id, code, msg)
                return await self.reconcile(self._record(call_id, request, sent_at),
                                            code=code, message=msg)
            await ctx.journal.call_rejected(call_id, code, msg)
            return Settled(Ended.REJECTED, call_id, request, kind=kind, error_code=code,
                           error_message=msg)
        ctx.copy_call_made(accepted=True)
        held += ctx.hold(request.datastore_id, [new_id])
        ctx.own.made_one(request.datastore_id, new_id)
        await ctx.journal.call_answered(call_id, new_id, new_v)
        settled = await self.wait(call_id, request, new_id, new_v, answered_at=answered_at,
                                  started_at=dest.get("updatedAt"))
        return _with(settled, source_latest=source_latest)

    async def settle(self, call: CallRecord) -> Settled:
        """A call an earlier run (or a crash of this one) left open."""
        token = logs.CALL_ID.set(call.call_id)
        held = self.ctx.hold(call.request.datastore_id,
                             [*call.request.image_sets(), call.result_image_set_id])
        try:
            settled = await self._settle(call)
        finally:
            logs.CALL_ID.reset(token)
            self.ctx.release(held)
        _log_settled(settled)
        return settled

    async def _settle(self, call: CallRecord) -> Settled:
        if call.state in (CallState.ANSWERED, CallState.ADOPTED) and call.result_image_set_id:
            return await self.wait(call.call_id, call.request, call.result_image_set_id,
                                   call.result_version_id or "", evidence=call.evidence)
        return await self.reconcile(call)

    async def reconcile(self, call: CallRecord, *, code: str | None = None,
                        message: str | None = None) -> Settled:
        ctx = self.ctx
        async with self._reconciling:
            known = ctx.journal.known_results(call.request.datastore_id)
            verdict = await self.reconciler.reconcile(call.request, call.sent_at,
                                                      known_results=known)
            ctx.outcome.reconciled += 1
            if verdict.happened:
                assert verdict.image_set_id and verdict.version_id
                await ctx.journal.call_adopted(call.call_id, verdict.image_set_id,
                                               verdict.version_id, verdict.evidence)
            elif verdict.happened is False:
                await ctx.journal.call_void(call.call_id, verdict.evidence)
            else:
                await ctx.journal.call_ambiguous(call.call_id, None, None,
                                                 evidence=verdict.evidence)
        if verdict.happened:
            assert verdict.image_set_id and verdict.version_id
            held = ctx.hold(call.request.datastore_id, [verdict.image_set_id])
            ctx.own.made_one(call.request.datastore_id, verdict.image_set_id)
            try:
                return await self.wait(call.call_id, call.request, verdict.image_set_id,
                                       verdict.version_id, evidence=verdict.evidence)
            finally:
                ctx.release(held)
        ended = Ended.VOID if verdict.happened is False else Ended.UNKNOWN
        return Settled(ended, call.call_id, call.request, error_code=code,
                       error_message=message, evidence=verdict.evidence)

    async def wait(self, call_id: int, request: CopyRequest, image_set_id: str, version_id: str,
                   *, evidence: str | None = None, answered_at: float | None = None,
                   started_at: Any = None) -> Settled:
        """`answered_at` (the waiter's clock) and `started_at` (the service's stamp of the
        copy's start) when this run's call was answered: the copy's duration and how late its
        end was seen come from them."""
        try:
            result = await self.ctx.waiter.wait(request.datastore_id, image_set_id, version_id,
                                                size=_instances(request), answered_at=answered_at,
                                                started_at=started_at)
        except Exception as exc:
            kind = classify(exc, operation="GetImageSet")
            if kind is ErrorKind.UNEXPECTED:
                raise
            return Settled(
                Ended.UNKNOWN, call_id, request, kind=kind, error_code=error_code(exc),
                error_message=error_message(exc), result_image_set_id=image_set_id,
                result_version_id=version_id,
                evidence=(f"the copy was accepted ({image_set_id} version {version_id}) but its "
                          f"end was not observed; the next run waits for it"),
                run_fatal=kind is ErrorKind.RUN_FATAL)
        return Settled(Ended.DONE, call_id, request, result_image_set_id=image_set_id,
                       result_version_id=result.version_id,
                       workflow_status=result.workflow_status, message=result.message,
                       evidence=evidence, copy_duration_s=result.copy_duration_s,
                       detection_delay_s=result.detection_delay_s)

    async def close(self, settled: Settled) -> None:
        """Move a DONE call to DONE without finishing its rows (they go on elsewhere)."""
        await self.ctx.journal.call_done(settled.call_id, settled.workflow_status,
                                         settled.message)

    async def stale_versions(self, settled: Settled) -> str | None:
        """Why a COPY_FAILED copy is a conflict in disguise, or None: the source's latest
        version is not the one the call named, or the destination has a version between the
        one the call named and the one the copy made."""
        api, req = self.ctx.api, settled.request
        ds = req.datastore_id
        source_now = str((await api.get_image_set(ds, req.source_image_set_id))["versionId"])
        if source_now != req.source_version_id and settled.source_latest != req.source_version_id:
            return (f"source {req.source_image_set_id} is at version {source_now}, not the "
                    f"{req.source_version_id} the call named")
        if req.destination_image_set_id and req.destination_version_id \
                and settled.result_image_set_id == req.destination_image_set_id:
            named, made = int(req.destination_version_id), int(settled.result_version_id or 0)
            versions = await api.list_image_set_versions(ds, req.destination_image_set_id)
            between = sorted(int(v["versionId"]) for v in versions
                             if named < int(v["versionId"]) < made)
            if between:
                return (f"destination {req.destination_image_set_id} got version {between[0]} "
                        f"from another writer after the {named} the call named")
        return None

    async def stale_or_none(self, settled: Settled) -> str | None:
        """For a copy that ended but did not copy (COPY_FAILED): stale_versions(), or None
        when the reads it needs fail for a reason that is not a bug (the service's
        COPY_FAILED then stands). None, reading nothing, for any other settled call."""
        if settled.ended is not Ended.DONE or settled.copied:
            return None
        try:
            return await self.stale_versions(settled)
        except Exception as exc:
            if classify(exc, operation="GetImageSet") is ErrorKind.UNEXPECTED:
                raise
            return None

    @staticmethod
    def _record(call_id: int, request: CopyRequest, sent_at: float) -> CallRecord:
        return CallRecord(call_id=call_id, run_id=0, state=CallState.AMBIGUOUS, row_keys=(),
                          request=request, sent_at=sent_at)


def _with(settled: Settled, **changes: Any) -> Settled:
    return replace(settled, **changes)


def _instances(request: CopyRequest) -> int | None:
    """The instances a subset copy names (its size, to predict its end); None for a whole
    image set, or attributes that do not say."""
    if not request.copiable_attributes:
        return None
    try:
        series = json.loads(request.copiable_attributes)["Study"]["Series"]
        return sum(len(s.get("Instances") or {}) for s in series.values()) or None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _describe(request: CopyRequest) -> str:
    into = (f"{request.destination_image_set_id} version {request.destination_version_id}"
            if request.destination_image_set_id else "a new image set")
    what = "a subset of " if request.copiable_attributes else ""
    return (f"CopyImageSet of {what}{request.source_image_set_id} version "
            f"{request.source_version_id} into {into}")


def _log_settled(settled: Settled) -> None:
    if not logs.enabled(logging.INFO):
        return
    if settled.ended is Ended.DONE:
        what = (f"ended {settled.workflow_status}: {settled.result_image_set_id} version "
                f"{settled.result_version_id}")
    elif settled.ended is Ended.REJECTED:
        what = f"refused: {settled.error_code}: {settled.error_message}"
    elif settled.ended is Ended.VOID:
        what = f"did not happen: {settled.evidence}"
    else:
        what = f"outcome unknown: {settled.evidence or settled.error_code}"
    logs.emit(logging.INFO, "call_settled", f"call {settled.call_id} {what}",
              call_id=settled.call_id, outcome=settled.ended.value,
              workflow_status=settled.workflow_status, error_code=settled.error_code,
              result_image_set_id=settled.result_image_set_id,
              result_version_id=settled.result_version_id)
