"""What a CopyImageSet call means for its rows once it settled: small pure decisions, one
place for the live path (run/execute.py), a resumed run (run/runner.py) and, for the end of
an update or a delete, the undo (undo/apply.py); and the one read that tells a missing data
store (a set-up mistake) from a missing image set.

    settled_rows  a settled call (run/calls.Settled) -> what its rows become:
                  COPIED -> SUCCEEDED (the versions it wrote are carried); COPY_FAILED ->
                  FAILED, unless the versions it named had been overtaken (REFRESH: a
                  conflict in disguise); proved not executed -> AGAIN; unknown -> UNKNOWN
                  (the run stops when the reason is a set-up answer); refused -> REFUSED,
                  which the two decisions below settle (only the live path meets it: a
                  resumed call was accepted or never answered)
    passing       a throttle or a 5xx: send again (throttles use up no attempt: pacing owns
                  them) until --max-attempts, the throttle limit, or the service refusing
                  every recent copy (aws/quotawatch.py); then NOT_RUN
    refused       ServiceQuotaExceededException within the frames a copy may carry: the
                  concurrent-copy quota, whatever its wording says, which passes (retried,
                  then NOT_RUN); a merged call refused twice may meet a lower per-copy limit
                  than ours, and any other refusal of a merged call may belong to one row:
                  SPLIT in halves and resent; of a single row: FAILED
    action_ended  an undo's update or delete ended: DONE (UPDATED, DELETED) or FAILED

AGAIN and REFRESH mean the same to both callers' rows (they go to another call), and differ
in how: the live path sends again within --max-attempts (NOT_RUN after) or refreshes per
--on-conflict; a resumed run puts the rows back to PENDING for its dispatcher.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from batchcopy.aws.api import ImagingApi
from batchcopy.aws.retry import THROTTLE_LIMIT, error_code
from batchcopy.core.callstate import ActionState
from batchcopy.core.specs import Status
from batchcopy.run.calls import Ended, Settled

QUOTA_CODE = "ServiceQuotaExceededException"
NOT_FOUND = "ResourceNotFoundException"
ENDED_WELL = frozenset({"UPDATED", "DELETED"})  # an undo's revert or delete


class Next(enum.Enum):
    """Where a settled call's rows go."""

    FINISH = "FINISH"  # they take `status`, and the call moves to DONE with them
    AGAIN = "AGAIN"  # proved not executed: nothing was copied, they go to another call
    REFRESH = "REFRESH"  # a conflict in disguise: the call closes alone, the rows go on
    REFUSED = "REFUSED"  # refused without executing: see passing and refused()


@dataclass(frozen=True)
class RowsVerdict:
    """What a settled call means for its rows (settled_rows)."""

    next: Next
    status: Status | None = None  # with FINISH
    # the RowOutcome fields the settled call gives its rows (with FINISH)
    fields: dict[str, Any] = field(default_factory=dict)
    done_call: tuple[int, str | None, str | None] | None = None  # the call ends DONE with them
    carry: bool = False  # the copy wrote versions: the next copy of those image sets names them
    forget: bool = False  # where the image sets stand is unknown: read them afresh
    abort: str | None = None  # a set-up answer: the run stops, saying this


def settled_rows(settled: Settled, stale: str | None = None) -> RowsVerdict:
    """The one decision (see the module doc). `stale`: for a copy that ended COPY_FAILED,
    why the versions it named had been overtaken (run/calls.CallDriver.stale_or_none), or
    None."""
    common: dict[str, Any] = dict(
        call_id=settled.call_id, evidence=settled.evidence,
        result_image_set_id=settled.result_image_set_id,
        result_version_id=settled.result_version_id)
    if settled.ended is Ended.DONE:
        done = (settled.call_id, settled.workflow_status, settled.message)
        ended = dict(common, workflow_status=settled.workflow_status,
                     copy_duration_s=settled.copy_duration_s,
                     detection_delay_s=settled.detection_delay_s)
        if settled.copied:
            return RowsVerdict(Next.FINISH, Status.SUCCEEDED, ended, done, carry=True)
        if stale is not None:
            return RowsVerdict(Next.REFRESH)
        return RowsVerdict(Next.FINISH, Status.FAILED,
                           dict(ended, error_code=settled.workflow_status,
                                error_message=settled.message), done, carry=True)
    if settled.ended is Ended.UNKNOWN:
        abort = f"{settled.error_code}: {settled.error_message}" if settled.run_fatal else None
        return RowsVerdict(Next.FINISH, Status.UNKNOWN,
                           dict(common, error_code=settled.error_code,
                                error_message=settled.error_message), forget=True, abort=abort)
    if settled.ended is Ended.VOID:
        return RowsVerdict(Next.AGAIN)
    return RowsVerdict(Next.REFUSED)


def action_ended(workflow_status: str | None) -> ActionState:
    """An undo action's update or delete ended in `workflow_status`: DONE or FAILED."""
    return ActionState.DONE if workflow_status in ENDED_WELL else ActionState.FAILED


class Refusal(enum.Enum):
    """What to do with the rows of a refused call."""

    RETRY = "RETRY"  # after a backoff: the reason passes
    NOT_RUN = "NOT_RUN"  # the attempts are spent: the next run retries the rows
    SPLIT = "SPLIT"  # a merged call: resend its halves, so a bad row never fails the good
    FAILED = "FAILED"  # the service's final answer about this one row


def retry_passing(spent: int, throttles: int, max_attempts: int, throttled_out: bool) -> bool:
    """After a throttle or a 5xx: is there another attempt? (`spent` does not count the
    throttles; `throttled_out`: the service refused every recent copy.)"""
    return spent < max_attempts and throttles < THROTTLE_LIMIT and not throttled_out


def refused(code: str, rows: int, over_frames: bool | None, quota_refusals: int, spent: int,
            max_attempts: int) -> Refusal:
    """A refusal that is not a conflict in disguise nor a set-up mistake: `over_frames` is
    whether the call selects more frames than a copy may carry (None: unknown),
    `quota_refusals` counts this part's quota refusals, this one included."""
    if code == QUOTA_CODE and (over_frames is False or rows == 1) and (
            rows == 1 or quota_refusals < 2):
        return Refusal.RETRY if spent < max_attempts else Refusal.NOT_RUN
    return Refusal.SPLIT if rows > 1 else Refusal.FAILED


def throttled_out(api: ImagingApi) -> bool:
    """The service refused every recent CopyImageSet (aws/quotawatch.py STREAK_LIMIT)."""
    out = getattr(api, "throttled_out", None)
    return bool(out("CopyImageSet")) if out is not None else False


def no_copy(message: str | None, attempts: int) -> str:
    """A NOT_RUN row's message: the reason, and that the next run retries it."""
    return (f"{message or 'no answer'} (after {attempts} attempt(s); no copy was made: the "
            f"next run retries this row)")


class Datastores:
    """For a ResourceNotFoundException: is it the data store (a set-up mistake: the wrong
    region, account or endpoint; never the row's final answer) rather than an image set?
    One GetDatastore per data store and run; a data store seen once is taken as there.
    `seen` (data store -> the endpoint has it) names the missing ones in aws/retry.fatal_text."""

    def __init__(self, api: ImagingApi) -> None:
        self.api = api
        self.seen: dict[str, bool] = {}

    async def missing(self, datastore_id: str, code: str) -> bool:
        if code != NOT_FOUND or self.seen.get(datastore_id):
            return False
        try:
            await self.api.call("GetDatastore", datastoreId=datastore_id)
        except Exception as exc:
            if error_code(exc) == NOT_FOUND:
                self.seen[datastore_id] = False
                return True
            return False  # cannot tell: the image set's not-found stands
        self.seen[datastore_id] = True
        return False
