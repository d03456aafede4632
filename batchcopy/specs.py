"""Value types shared by the pipeline: one manifest row, row statuses, exit codes.

Pure data, no I/O, no heavy imports.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(str, enum.Enum):
    """Terminal status of one manifest row (the report's `status` column)."""

    SUCCEEDED = "SUCCEEDED"  # the copy ended ACTIVE / COPIED
    FAILED = "FAILED"  # the call was refused, or the copy ended COPY_FAILED
    CONFLICT = "CONFLICT"  # version conflicts outlasted --on-conflict refresh
    SKIPPED = "SKIPPED"  # already done by an earlier run (journal)
    NOT_RUN = "NOT_RUN"  # never attempted (abort, stop, time limit)
    UNKNOWN = "UNKNOWN"  # a copy may or may not have happened; see the evidence


TERMINAL_DONE = frozenset({Status.SUCCEEDED, Status.SKIPPED})


class ExitCode(int, enum.Enum):
    OK = 0  # every row succeeded (or was skipped as already done)
    ROWS_FAILED = 1  # some rows failed, conflicted or are unknown
    USAGE = 2  # usage or manifest error: nothing was sent
    ABORTED = 3  # fatal error (access denied, credentials) or failure threshold
    LOCKED = 4  # another run holds the journal's lock
    TIME_LIMIT = 5  # --max-duration reached: stopped dispatching, state saved
    INTERRUPTED = 130  # SIGINT/SIGTERM: state saved, resumable


@dataclass(frozen=True, slots=True)
class CopySpec:
    """One validated manifest row: one CopyImageSet request as the user asked for it.

    `copiable_attributes` is always the API's JSON string (canonical: compact,
    keys sorted) or None for a copy of the whole source image set; the manifest's
    friendlier series_instance_uid / sop_instance_uid columns are turned into it.
    `extras` is not part of the request: with extra_columns="ignore", the manifest's
    own columns of this row as a compact JSON object (column -> text), else None.
    """

    manifest_row: int  # 1-based data row number (the header is not a row)
    row_id: str
    datastore_id: str
    source_image_set_id: str
    source_version_id: str | None = None
    destination_image_set_id: str | None = None
    destination_version_id: str | None = None
    copiable_attributes: str | None = None
    force: bool = False
    promote_to_primary: bool = False
    extras: str | None = None

    @property
    def is_subset(self) -> bool:
        return self.copiable_attributes is not None

    def image_sets(self) -> tuple[str, ...]:
        """The existing image sets this row locks while it runs."""
        if self.destination_image_set_id:
            return (self.source_image_set_id, self.destination_image_set_id)
        return (self.source_image_set_id,)


# The fields of the request (what the journal records per row and the report shows);
# `extras` rides along with the row and is not one of them.
SPEC_FIELDS: tuple[str, ...] = tuple(name for name in CopySpec.__dataclass_fields__ if name != "extras")
