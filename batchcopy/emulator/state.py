"""The emulator's stored state as plain values: data stores, image sets, versions.

Two kinds of status live here and are kept apart on purpose:

* a version's own workflow status (`Version.workflow`) records how that version came to
  be and how its own operation ended: CREATED, COPYING -> COPIED / COPY_FAILED,
  UPDATING -> UPDATED / UPDATE_FAILED, ... It only moves forward while that operation
  runs, with one exception the CLI examples show: a successful version that a copy reads
  reads COPIED afterwards (get-image-set example: version 1 COPIED, updatedAt days after
  createdAt). A failed version keeps its status and message for ever.
* the image set's current activity (a copy reading it, a deletion running) is a property
  of the image set. While it lasts, the latest version *shows* COPYING_WITH_READ_ONLY_ACCESS
  or DELETING (as the copy and delete answers do), without its record being overwritten.
  A deleted image set shows imageSetState DELETED and deletedAt; its versions keep theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchcopy.emulator import dicom
from batchcopy.emulator.errors import ResourceNotFoundException, ValidationException

ACTIVE, LOCKED, DELETED = "ACTIVE", "LOCKED", "DELETED"
FAILED_WORKFLOWS = frozenset({"COPY_FAILED", "UPDATE_FAILED", "IMPORT_FAILED"})
READ_BY_COPY = "COPYING_WITH_READ_ONLY_ACCESS"


@dataclass
class Version:
    number: int
    workflow: str
    is_primary: bool
    created_at: float
    updated_at: float
    content: dicom.Content
    message: str | None = None
    forced: bool = False


@dataclass
class ImageSet:
    id: str
    datastore_id: str
    created_at: float
    updated_at: float
    versions: list[Version]
    readers: int = 0  # running copies reading it (as their source)
    writing: int | None = None  # version number a running copy or update is writing
    deleting: bool = False  # DeleteImageSet accepted, not finished
    first_copy_running: bool = False  # made by a copy that has not ended yet
    deleted_at: float | None = None

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    @property
    def state(self) -> str:
        if self.deleted_at is not None:
            return DELETED
        if self.deleting or self.readers or self.writing is not None:
            return LOCKED
        return ACTIVE

    @property
    def only_read(self) -> bool:
        """LOCKED only because copies read it (no write, no deletion running)."""
        return bool(self.readers) and self.writing is None and not self.deleting

    def shown_workflow(self, v: Version) -> str:
        """The status a client sees for `v`: the image set's activity on its latest version."""
        if v is self.latest:
            if self.deleting:
                return "DELETING"
            if self.only_read:
                return READ_BY_COPY
        return v.workflow

    def version(self, version_id: str | None) -> Version:
        if version_id is None:
            return self.latest
        n = version_number(version_id)
        if 1 <= n <= len(self.versions):
            return self.versions[n - 1]
        raise ResourceNotFoundException(
            f"Version {version_id} of image set {self.id} not found")


def version_number(text: Any) -> int:
    if not isinstance(text, str) or not text.isdigit():
        raise ValidationException(f"Version id {text!r} must be a decimal number")
    return int(text)


@dataclass
class Datastore:
    id: str
    name: str
    seq: int
    created_at: float
    updated_at: float
    status: str = ACTIVE
    kms_key_arn: str | None = None
    lambda_authorizer_arn: str | None = None
    image_sets: dict[str, ImageSet] = field(default_factory=dict)


@dataclass
class Counters:
    copies_requested: int = 0
    copies_executed: int = 0
    copies_succeeded: int = 0
    copies_failed: int = 0
    frames_copied: int = 0
    updates_requested: int = 0
    updates_succeeded: int = 0
    updates_failed: int = 0
    deletes_requested: int = 0
