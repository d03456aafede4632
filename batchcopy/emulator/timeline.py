"""The life of every accepted copy, as the service saw it: when it was accepted, when it
really ended, and when a client first saw it ended.

A client cannot know when a copy ended; the emulator can. Each accepted CopyImageSet gets
a `CopyRecord`: `accepted_at` (the model's clock when the call was executed), `ended_at`
(when the destination version left its in-progress status: COPIED or COPY_FAILED, after
UPDATING_FOR_STUDY_CONSISTENCY where that reading is on), `seen_ended_at` (the first
GetImageSet answer that showed the version ended: a client noticing the end) and how many
GetImageSet answers showed it still running. `GET /_emulator/copies` lists them; the
benchmarks derive the detection delay (seen_ended_at - ended_at), the span and the gaps of
accepted copies from it, and tests count with it (which copy was seen first, how long an
ended copy stayed unseen). Times are the model's clock (clock.py), unrounded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class CopyRecord:
    datastore_id: str
    image_set_id: str
    version_id: str
    source_image_set_id: str
    frames: int
    accepted_at: float
    ended_at: float | None = None
    workflow_status: str | None = None
    seen_ended_at: float | None = None
    reads_running: int = 0  # GetImageSet answers that showed it still running

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CopyTimeline:
    """Records by (image set, version number); kept in acceptance order. Not thread-safe on
    its own: the model's lock guards it."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, int], CopyRecord] = {}

    def accepted(self, datastore_id: str, image_set_id: str, version: int, source_id: str,
                 frames: int, at: float) -> None:
        self._records[(image_set_id, version)] = CopyRecord(
            datastore_id, image_set_id, str(version), source_id, frames, at)

    def ended(self, image_set_id: str, version: int, workflow_status: str, at: float) -> None:
        record = self._records.get((image_set_id, version))
        if record is not None and record.ended_at is None:
            record.ended_at, record.workflow_status = at, workflow_status

    def read(self, image_set_id: str, version: int, at: float) -> None:
        """A GetImageSet answer about this version at `at`."""
        record = self._records.get((image_set_id, version))
        if record is None:
            return
        if record.ended_at is None:
            record.reads_running += 1
        elif record.seen_ended_at is None:
            record.seen_ended_at = at

    def records(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self._records.values()]

    def __len__(self) -> int:
        return len(self._records)
