"""What `batchcopy select` writes for one source image set: its series as read from the
metadata (SeriesInfo), and the manifest rows that copy exactly the matching ones.

One row per source: `series_instance_uid` lists the matching series (spaces between), so
they travel in ONE CopyImageSet call and, by default, land in ONE new image set (rows that
make new image sets never merge). A call carries at most 1,000 image frames (and, under
the other reading of that quota, 1,000 instances): a source whose matching series hold
more is written as several rows, each within the limit, and said so. A single series
above the limit cannot go into a new image set in one call: it is left out, said so;
with --into (an existing destination) it is written one row per instance, and the runner
merges those rows back into calls within the limit. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
MAX_PER_CALL = 1000  # image frames per CopyImageSet (quota page); instances, read strictly
COLUMNS = ("row_id", "datastore_id", "source_image_set_id", "source_version_id",
           "destination_image_set_id", "series_instance_uid", "sop_instance_uid", "force")
_ATTRIBUTES = ("Modality", "BodyPartExamined", "SeriesDescription", "SeriesInstanceUID")


@dataclass(frozen=True)
class SeriesInfo:
    """One series of an image set version: what --where looks at, and its size."""

    uid: str
    attributes: dict[str, Any]  # Modality, BodyPartExamined, SeriesDescription, SeriesInstanceUID
    instances: int
    frames: int
    sops: tuple[str, ...] = ()  # only for a series above the per-call limit (--into splits it)

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "attributes": self.attributes, "instances": self.instances,
                "frames": self.frames, "sops": list(self.sops)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SeriesInfo":
        return cls(data["uid"], dict(data["attributes"]), int(data["instances"]),
                   int(data["frames"]), tuple(data.get("sops") or ()))


def series_of(document: dict[str, Any]) -> list[SeriesInfo]:
    """The series of a GetImageSetMetadata document, in its order."""
    out = []
    for uid, body in (((document.get("Study") or {}).get("Series")) or {}).items():
        body = body or {}
        dicom = body.get("DICOM") or {}
        attributes = {k: dicom.get(k) for k in _ATTRIBUTES if dicom.get(k) is not None}
        attributes.setdefault("SeriesInstanceUID", uid)
        instances = body.get("Instances") or {}
        frames = sum(max(1, len((inst or {}).get("ImageFrames") or ())) for inst in instances.values())
        big = frames > MAX_PER_CALL or len(instances) > MAX_PER_CALL
        out.append(SeriesInfo(uid, attributes, len(instances), frames,
                              tuple(instances) if big else ()))
    return out


@dataclass
class Chosen:
    """The rows of one source, and what could not be written as asked."""

    rows: list[dict[str, str]] = field(default_factory=list)
    split: bool = False  # more than one row for a new image set: several new image sets
    left_out: list[str] = field(default_factory=list)  # series above the limit, new image set
    primary: bool | None = None  # the source is a primary image set (SearchImageSets isPrimary)


def rows_for(datastore_id: str, source: str, version: str, series: Iterable[SeriesInfo], *,
             into: str | None = None, force: bool = False, pin: bool = False,
             limit: int = MAX_PER_CALL) -> Chosen:
    """The manifest rows copying exactly `series` (the matching ones) of `source`."""
    chosen = Chosen()
    groups: list[list[SeriesInfo]] = []
    frames = instances = 0
    for s in series:
        if s.frames > limit or s.instances > limit:
            if into is None:
                chosen.left_out.append(s.uid)
            else:
                groups.append([s])  # written one row per instance below
                frames = instances = limit + 1  # close it: nothing joins an oversized series
            continue
        if not groups or frames + s.frames > limit or instances + s.instances > limit:
            groups.append([])
            frames = instances = 0
        groups[-1].append(s)
        frames += s.frames
        instances += s.instances
    base = {"datastore_id": datastore_id, "source_image_set_id": source,
            "source_version_id": version if pin else "", "destination_image_set_id": into or "",
            "force": "true" if force else ""}
    for group in groups:
        if len(group) == 1 and (group[0].frames > limit or group[0].instances > limit):
            for sop in group[0].sops:
                chosen.rows.append({**base, "series_instance_uid": group[0].uid,
                                    "sop_instance_uid": sop})
            continue
        chosen.rows.append({**base, "series_instance_uid": " ".join(s.uid for s in group),
                            "sop_instance_uid": ""})
    for k, row in enumerate(chosen.rows, start=1):
        row["row_id"] = source if len(chosen.rows) == 1 else f"{source}-{k}"
    chosen.split = into is None and len(chosen.rows) > 1
    return chosen


def whole_rows(datastore_id: str, source: str, version: str, *, into: str | None = None,
               force: bool = False, pin: bool = False) -> Chosen:
    """No series condition: the whole image set, one row (no metadata read)."""
    return Chosen(rows=[{"row_id": source, "datastore_id": datastore_id,
                         "source_image_set_id": source, "source_version_id": version if pin else "",
                         "destination_image_set_id": into or "", "series_instance_uid": "",
                         "sop_instance_uid": "", "force": "true" if force else ""}])
