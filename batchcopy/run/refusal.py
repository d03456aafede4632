"""What a CopyImageSet call the service did not run means for its rows: the decisions
behind run/execute.py's answer to a throttle, a 5xx or a refusal, as small pure functions,
and the one read that tells a missing data store (a set-up mistake) from a missing image set.

    passing   a throttle or a 5xx: send again (throttles use up no attempt: pacing owns
              them) until --max-attempts, the throttle limit, or the service refusing every
              recent copy (aws/quotawatch.py); then NOT_RUN
    refused   ServiceQuotaExceededException within the frames a copy may carry: the
              concurrent-copy quota, whatever its wording says, which passes (retried, then
              NOT_RUN); a merged call refused twice may meet a lower per-copy limit than
              ours, and any other refusal of a merged call may belong to one row: SPLIT in
              halves and resent; of a single row: FAILED
"""

from __future__ import annotations

import enum
from typing import Any

from batchcopy.aws.api import ImagingApi
from batchcopy.aws.retry import THROTTLE_LIMIT, error_code

QUOTA_CODE = "ServiceQuotaExceededException"
NOT_FOUND = "ResourceNotFoundException"


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


def throttled_out(api: Any) -> bool:
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
