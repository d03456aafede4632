"""Asynchronous work the model has accepted and not finished: copies, updates, deletions.

The model needs no background task: before every call it pops the work whose
`completes_at` has come (by its own clock) and finishes it, earliest first, ties in
acceptance order (`seq`). Finishing one piece may queue the next (a copy's study
consistency phase); work queued that way is due at once if its time has come too.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from batchcopy.emulator import dicom


@dataclass
class Work:
    seq: int
    completes_at: float
    datastore_id: str


@dataclass
class PendingCopy(Work):
    source_id: str
    source_version: int
    destination_id: str
    destination_version: int
    result: dicom.Content
    failure: str | None
    frames: int
    promote: bool = False  # promoteToPrimary: `promote_side_effects` applies when it succeeds


@dataclass
class PendingConsistency(Work):
    """A copied destination passing through UPDATING_FOR_STUDY_CONSISTENCY."""

    image_set_id: str
    version: int


@dataclass
class PendingUpdate(Work):
    image_set_id: str
    version: int
    result: dicom.Content
    failure: str | None


@dataclass
class PendingDelete(Work):
    image_set_id: str


class WorkQueue:
    """Pending work ordered by (completes_at, seq)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Work]] = []

    def push(self, work: Work) -> None:
        heapq.heappush(self._heap, (work.completes_at, work.seq, work))

    def pop_due(self, now: float) -> Work | None:
        if self._heap and self._heap[0][0] <= now:
            return heapq.heappop(self._heap)[2]
        return None

    def count(self, kind: type[Work], datastore_id: str | None = None) -> int:
        return sum(1 for _, _, w in self._heap
                   if isinstance(w, kind) and (datastore_id is None or w.datastore_id == datastore_id))

    def __len__(self) -> int:
        return len(self._heap)
