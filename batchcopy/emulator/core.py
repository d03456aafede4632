"""The model's state and the helpers every operation shares (no HTTP, no operations).

`ModelCore` holds the data stores, the emulated clock, the queue of pending work and
the counters, and answers the questions several operations ask the same way: does this
image set exist, may it be written (the `locked` switch), is this version the latest
(`stale_version`), how is a failure worded (`copy_failed_message`), which error does an
exceeded service quota raise (`copy_limit_error`, `concurrency_limit_error`). copying.py, updating.py and model.py build
the operations on it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from batchcopy.emulator import dicom
from batchcopy.emulator.clock import OffsetClock
from batchcopy.emulator.config import EmulatorConfig
from batchcopy.emulator.errors import (
    ConflictException,
    ResourceNotFoundException,
    ServiceError,
    ServiceQuotaExceededException,
    ThrottlingException,
    ValidationException,
)
from batchcopy.emulator.pending import Work, WorkQueue
from batchcopy.emulator.timeline import CopyTimeline
from batchcopy.emulator.state import (
    DELETED,
    LOCKED,
    Counters,
    Datastore,
    ImageSet,
    Version,
    version_number,
)

TERSE_QUOTA_MESSAGE = "Service quota exceeded"


class ModelCore:
    """State + shared rules. Thread-safe through one RLock held by every public method."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time,
                 *, id_seed: int = 0) -> None:
        self.config = config
        self.lock = threading.RLock()
        self._clock = OffsetClock(clock)
        self._id_seed = id_seed
        self._token_secret = hashlib.sha256(f"batchcopy-emulator-token:{id_seed}".encode()).hexdigest()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self._datastores: dict[str, Datastore] = {}
            self._client_tokens: dict[str, str] = {}
            self._tags: dict[str, dict[str, str]] = {}
            self._queue = WorkQueue()
            self._timeline = CopyTimeline()
            self._counters = Counters()
            self._id_counter = 0
            self._seq = 0
            self._clock.offset_s = 0.0

    # ---------------------------------------------------------------- time and pending work
    def _now(self) -> float:
        return round(self._clock(), 3)

    def _due_in(self, seconds: float) -> float:
        """The completion time of work taking `seconds` (before time_scale) from now."""
        return self._clock() + self.config.scaled(seconds)

    def _advance(self) -> None:
        now = self._clock()
        while (work := self._queue.pop_due(now)) is not None:
            self._finish(work)

    def _finish(self, work: Work) -> None:
        raise NotImplementedError(type(work).__name__)

    # ---------------------------------------------------------------- identifiers
    def _new_id(self, kind: str) -> str:
        while True:
            self._id_counter += 1
            candidate = hashlib.md5(
                f"batchcopy-emulator:{self._id_seed}:{kind}:{self._id_counter}".encode()).hexdigest()
            if not self._id_taken(candidate):
                return candidate

    def _id_taken(self, candidate: str) -> bool:
        return candidate in self._datastores or any(
            candidate in ds.image_sets for ds in self._datastores.values())

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _arn(self, datastore_id: str, image_set_id: str | None = None) -> str:
        c = self.config
        arn = f"arn:aws:medical-imaging:{c.region}:{c.account_id}:datastore/{datastore_id}"
        return arn if image_set_id is None else f"{arn}/imageset/{image_set_id}"

    # ---------------------------------------------------------------- lookups
    def _datastore(self, datastore_id: str) -> Datastore:
        ds = self._datastores.get(datastore_id)
        if ds is None:
            raise ResourceNotFoundException(f"Datastore {datastore_id} not found")
        return ds

    def _image_set(self, ds: Datastore, image_set_id: str, role: str = "Image set",
                   allow_deleted: bool = False) -> ImageSet:
        iset = ds.image_sets.get(image_set_id)
        if iset is None or (iset.state == DELETED and not allow_deleted):
            raise ResourceNotFoundException(
                f"{role} {image_set_id} not found in datastore {ds.id}")
        return iset

    # ---------------------------------------------------------------- construction
    def _add_datastore(self, name: str, datastore_id: str | None = None) -> Datastore:
        if datastore_id is not None and self._id_taken(datastore_id):
            raise ConflictException(f"Datastore {datastore_id} already exists")
        now = self._now()
        ds = Datastore(id=datastore_id or self._new_id("datastore"), name=name,
                       seq=self._next_seq(), created_at=now, updated_at=now)
        self._datastores[ds.id] = ds
        return ds

    def _new_image_set(self, ds: Datastore, now: float, image_set_id: str | None = None,
                       first: tuple[dicom.Content, bool] | None = None) -> ImageSet:
        """A new image set; with `first` = (content, is_primary) its version 1 ACTIVE / CREATED."""
        versions = [] if first is None else [Version(1, "CREATED", first[1], now, now, first[0])]
        iset = ImageSet(id=image_set_id or self._new_id("imageset"), datastore_id=ds.id,
                        created_at=now, updated_at=now, versions=versions)
        ds.image_sets[iset.id] = iset
        return iset

    def _begin_version(self, iset: ImageSet, now: float, workflow: str, is_primary: bool,
                       content: dicom.Content, forced: bool) -> Version:
        """Append the version an operation writes; the image set is LOCKED until it ends."""
        version = Version(len(iset.versions) + 1, workflow, is_primary, now, now, content, forced=forced)
        iset.versions.append(version)
        iset.writing, iset.updated_at = version.number, now
        return version

    @staticmethod
    def _end_version(iset: ImageSet, version: Version, at: float, workflow: str,
                     message: str | None, content: dicom.Content) -> None:
        version.content, version.workflow, version.message = content, workflow, message
        version.updated_at = iset.updated_at = at
        iset.writing = None

    # ---------------------------------------------------------------- shared rules
    def _check_writable(self, iset: ImageSet, role: str, as_source: bool = False) -> None:
        """A LOCKED image set takes no other write (`locked` switch: which error, and
        whether a copy may read a source that other copies are only reading)."""
        if iset.state != LOCKED:
            return
        reading = self.config.reading("locked")
        if reading == "shared_source" and as_source and iset.only_read:
            return
        message = (f"{role} {iset.id} is LOCKED ({iset.shown_workflow(iset.latest)}); "
                   "it accepts no other write until that ends")
        raise ValidationException(message) if reading == "validation" else ConflictException(message)

    def _check_readable(self, iset: ImageSet) -> ImageSet:
        """`reads_while_locked`: with `conflict`, a read of a LOCKED image set answers 409."""
        if iset.state == LOCKED and self.config.reading("reads_while_locked") == "conflict":
            raise ConflictException(f"Image set {iset.id} is LOCKED "
                                    f"({iset.shown_workflow(iset.latest)}); try again later")
        return iset

    def _check_latest(self, iset: ImageSet, given: Any, role: str) -> str | None:
        """None when `given` names the latest version. Otherwise (`stale_version` switch)
        raise ConflictException / ValidationException at once, or return the reason the
        new version will fail with."""
        latest = iset.latest.number
        if version_number(given) == latest:
            return None
        message = (f"latestVersionId {given} is not the latest version of the {role} {iset.id} "
                   f"(that is {latest})")
        reading = self.config.reading("stale_version")
        if reading == "copy_failed":
            return message + "."
        raise ValidationException(message) if reading == "validation" else ConflictException(message)

    def _invalid_request(self, reason: str) -> str:
        """The message of a version that failed for `reason` (`copy_failed_message` switch)."""
        space = "  " if self.config.reading("copy_failed_message") == "double_space" else " "
        return f"INVALID_REQUEST:{space}{reason}"

    def _quota_error(self, switch: str, detail: str) -> ServiceError:
        """The error of an exceeded service quota, as the switch `switch` reads it."""
        reading = self.config.reading(switch)
        if reading == "quota_terse":
            return ServiceQuotaExceededException(TERSE_QUOTA_MESSAGE)
        if reading == "validation":
            return ValidationException(detail)
        if reading == "throttling":
            return ThrottlingException("Rate exceeded")
        return ServiceQuotaExceededException(detail)
