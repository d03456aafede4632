"""Value types shared by the pipeline: one manifest row, one CopyImageSet request, row
statuses, exit codes.

Pure data, no I/O, no heavy imports.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any


class Status(str, enum.Enum):
    """Status of one manifest row (the report's `status` column).

    What the next run does with it is part of the meaning: FAILED is a final answer from
    the service and stays; NOT_RUN and CONFLICT made no copy and are run again; UNKNOWN is
    settled (never resent blindly); SUCCEEDED and SKIPPED are done.
    """

    SUCCEEDED = "SUCCEEDED"  # the copy ended ACTIVE / COPIED
    FAILED = "FAILED"  # the service's final answer: COPY_FAILED, or the request refused as invalid
    CONFLICT = "CONFLICT"  # a pinned version was stale, or conflicts outlasted the refreshes
    SKIPPED = "SKIPPED"  # done by an earlier run, or already present in the destination
    NOT_RUN = "NOT_RUN"  # no copy was made (stop, abort, passing errors): the next run retries
    UNKNOWN = "UNKNOWN"  # a copy may or may not have happened; the next run settles it


TERMINAL_DONE = frozenset({Status.SUCCEEDED, Status.SKIPPED})


class ExitCode(int, enum.Enum):
    OK = 0  # every row succeeded (or was skipped as already done)
    ROWS_FAILED = 1  # some rows failed, conflicted, are unknown or not run
    USAGE = 2  # usage, setup or manifest error: nothing was sent
    ABORTED = 3  # fatal error (access denied, credentials), failure threshold, or no report written
    LOCKED = 4  # another run holds the journal's lock or some of the manifest's image sets
    TIME_LIMIT = 5  # --max-duration reached: stopped dispatching, state saved
    INTERNAL = 70  # a bug in batchcopy: the run stopped, the journal is consistent
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

    @property
    def key(self) -> str:
        """What this row copies, independent of its row_id, position and version pins.

        The journal matches rows by this key: a rerun skips a copy that was done even if
        the manifest was reordered, renumbered or regenerated with fresh pins.
        """
        return copy_key(self.datastore_id, self.source_image_set_id,
                        self.destination_image_set_id, self.copiable_attributes,
                        self.force, self.promote_to_primary)

    def image_sets(self) -> tuple[str, ...]:
        """The existing image sets this row locks while it runs."""
        if self.destination_image_set_id:
            return (self.source_image_set_id, self.destination_image_set_id)
        return (self.source_image_set_id,)


# The fields of the request (what the journal records per row and the report shows);
# `extras` rides along with the row and is not one of them.
SPEC_FIELDS: tuple[str, ...] = tuple(name for name in CopySpec.__dataclass_fields__ if name != "extras")


def copy_key(datastore_id: str, source: str, destination: str | None, attributes: str | None,
             force: bool, promote: bool) -> str:
    """A 32-hex-digit digest of what a copy does (see CopySpec.key)."""
    text = json.dumps([datastore_id, source, destination, attributes, bool(force), bool(promote)],
                      separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class CopyRequest:
    """One CopyImageSet request exactly as sent: the typed record carried from planning
    through the journal, the client and reconciliation. A planned unit's (plan/units.py
    CopyUnit.call) names the manifest's version pins, None where there is none: the runner
    names the versions it sends (`naming`) before the request leaves."""

    datastore_id: str
    source_image_set_id: str
    source_version_id: str | None
    destination_image_set_id: str | None
    destination_version_id: str | None
    copiable_attributes: str | None
    force: bool
    promote_to_primary: bool

    def params(self) -> dict[str, Any]:
        """The botocore input of CopyImageSet."""
        if self.source_version_id is None:
            raise ValueError("a copy needs its source's latest version id")
        source: dict[str, Any] = {"latestVersionId": self.source_version_id}
        if self.copiable_attributes is not None:
            source["DICOMCopies"] = {"copiableAttributes": self.copiable_attributes}
        information: dict[str, Any] = {"sourceImageSet": source}
        if self.destination_image_set_id is not None:
            if self.destination_version_id is None:
                raise ValueError("a destination image set needs its latest version id")
            information["destinationImageSet"] = {
                "imageSetId": self.destination_image_set_id,
                "latestVersionId": self.destination_version_id,
            }
        params: dict[str, Any] = {"datastoreId": self.datastore_id,
                                  "sourceImageSetId": self.source_image_set_id,
                                  "copyImageSetInformation": information}
        if self.force:
            params["force"] = True
        if self.promote_to_primary:
            params["promoteToPrimary"] = True
        return params

    def image_sets(self) -> tuple[str, ...]:
        if self.destination_image_set_id:
            return (self.source_image_set_id, self.destination_image_set_id)
        return (self.source_image_set_id,)

    def naming(self, source_version_id: str | None,
               destination_version_id: str | None) -> CopyRequest:
        """The same copy naming these versions."""
        return replace(self, source_version_id=source_version_id,
                       destination_version_id=destination_version_id)


REQUEST_FIELDS: tuple[str, ...] = tuple(CopyRequest.__dataclass_fields__)
