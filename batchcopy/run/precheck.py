"""Checks made before a CopyImageSet call is spent, from the image sets' metadata.

* **Subset keys**: a row naming a series or SOP instance that the source (at the version
  the call will name) does not hold fails at once, without a copy call and without taking
  the rows merged with it down.
* **Frames per call**: a merged unit whose union selects more image frames than the
  service allows per copy (1,000 by default) is cut, in manifest order, into parts that
  fit. A single row over the limit is sent as is: the service has the last word.
* **Already present** (`--skip-present`, on by default): a row copying into an existing
  destination whose every requested instance is already there, with the same DICOM
  attributes as in the source, is SKIPPED. It protects a rerun whose journal was lost and
  a run on another machine that did the same rows. Rows into new image sets are looked
  for in the whole data store (run/present.py).

Metadata documents are read with GetImageSetMetadata (inside its own quota); a source's
document is cached per version (an image set's version never changes), a few at a time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from batchcopy.core.specs import CopySpec
from batchcopy.manifest.rules import series_map

MAX_FRAMES_PER_COPY = 1000
SUBSET_NOT_IN_SOURCE = "SubsetNotInSource"


class MetadataCache:
    """GetImageSetMetadata documents by (data store, image set, version), LRU-bounded."""

    def __init__(self, api: Any, size: int = 32) -> None:
        self.api = api
        self.size = size
        self._docs: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()

    async def get(self, datastore_id: str, image_set_id: str, version: str) -> dict[str, Any]:
        key = (datastore_id, image_set_id, version)
        doc = self._docs.get(key)
        if doc is None:
            doc = await self.api.get_image_set_metadata(datastore_id, image_set_id, version)
            self._docs[key] = doc
            while len(self._docs) > self.size:
                self._docs.popitem(last=False)
        else:
            self._docs.move_to_end(key)
        return doc


def _series(doc: dict[str, Any]) -> dict[str, Any]:
    return (doc.get("Study") or {}).get("Series") or {}


def _frames(instance: dict[str, Any]) -> int:
    return max(1, len(instance.get("ImageFrames") or []))


def selection(doc: dict[str, Any], attrs: str | None) -> dict[tuple[str, str], dict[str, Any]]:
    """(series, SOP) -> instance document of what `attrs` selects from `doc` (present only)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    series = _series(doc)
    wanted = series_map(attrs) if attrs else {uid: None for uid in series}
    for uid, sops in wanted.items():
        instances = (series.get(uid) or {}).get("Instances") or {}
        for sop in (instances if sops is None else sops):
            if sop in instances:
                out[(uid, sop)] = instances[sop]
    return out


def missing_from(doc: dict[str, Any], attrs: str) -> str | None:
    """What `attrs` names that `doc` does not hold, as a phrase; None if everything is there."""
    series = _series(doc)
    for uid, sops in series_map(attrs).items():
        if uid not in series:
            return f"series {uid}"
        instances = (series[uid] or {}).get("Instances") or {}
        for sop in sorted(sops or ()):
            if sop not in instances:
                return f"SOP instance {sop} of series {uid}"
    return None


def frames(doc: dict[str, Any], attrs: str | None) -> int:
    return sum(_frames(i) for i in selection(doc, attrs).values())


def pack_by_frames(rows: Sequence[CopySpec], doc: dict[str, Any],
                   limit: int = MAX_FRAMES_PER_COPY) -> list[list[CopySpec]]:
    """Consecutive groups of rows whose union stays within `limit` frames (a row alone over
    the limit forms its own group)."""
    groups: list[list[CopySpec]] = []
    current: list[CopySpec] = []
    taken: set[tuple[str, str]] = set()
    count = 0
    for row in rows:
        picked = selection(doc, row.copiable_attributes)
        new = {k: v for k, v in picked.items() if k not in taken}
        extra = sum(_frames(i) for i in new.values())
        if current and count + extra > limit:
            groups.append(current)
            current, taken, count = [], set(), 0
            new, extra = picked, sum(_frames(i) for i in picked.values())
        current.append(row)
        taken.update(new)
        count += extra
    if current:
        groups.append(current)
    return groups


def present_in(dest: dict[str, Any], source: dict[str, Any], attrs: str | None) -> int | None:
    """How many instances `attrs` selects from `source`, if every one of them is already in
    `dest` with the same DICOM attributes; None otherwise (or if it selects nothing)."""
    picked = selection(source, attrs)
    if not picked:
        return None
    held = _series(dest)
    for (uid, sop), instance in picked.items():
        there = ((held.get(uid) or {}).get("Instances") or {}).get(sop)
        if there is None or there.get("DICOM") != instance.get("DICOM"):
            return None
    return len(picked)


@dataclass
class Checked:
    """What the checks left: rows to send, rows that fail, rows already present."""

    send: list[CopySpec] = field(default_factory=list)
    absent: list[tuple[CopySpec, str]] = field(default_factory=list)  # (row, what is missing)
    present: list[tuple[CopySpec, int]] = field(default_factory=list)  # (row, instances)


def check_rows(rows: Sequence[CopySpec], source: dict[str, Any],
               dest: dict[str, Any] | None) -> Checked:
    out = Checked()
    for row in rows:
        if row.copiable_attributes is not None:
            gone = missing_from(source, row.copiable_attributes)
            if gone is not None:
                out.absent.append((row, gone))
                continue
        if dest is not None:
            n = present_in(dest, source, row.copiable_attributes)
            if n is not None:
                out.present.append((row, n))
                continue
        out.send.append(row)
    return out
