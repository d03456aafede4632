"""The rules of AWS HealthImaging, as plain Python objects (no HTTP here).

`HealthImaging.call(operation, params)` takes the botocore input-member names
with Python values (wire.py has already checked types, patterns and ranges) and
returns the output-member names, timestamps as float epoch seconds. Errors are
`batchcopy.emulator.errors.ServiceError` subclasses.

Copies are asynchronous but need no background task: every public method first
runs `_advance()`, which completes every copy whose `completes_at <= clock()`,
in completion order. A test that owns the clock is therefore deterministic.

Everything the public documentation leaves open is listed in ASSUMPTIONS.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchcopy.emulator import dicom
from batchcopy.emulator.clock import OffsetClock
from batchcopy.emulator.config import EmulatorConfig
from batchcopy.emulator.errors import (
    ConflictException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    ValidationException,
)

ACTIVE, LOCKED, DELETED = "ACTIVE", "LOCKED", "DELETED"
FAILED_WORKFLOWS = frozenset({"COPY_FAILED", "UPDATE_FAILED", "IMPORT_FAILED"})
DEFAULT_PAGE_SIZE = 50


@dataclass
class Version:
    number: int
    workflow: str
    is_primary: bool
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
    state: str = ACTIVE
    deleted_at: float | None = None
    writing: int | None = None  # version number a running copy is writing (destination)

    @property
    def latest(self) -> Version:
        return self.versions[-1]

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
class PendingCopy:
    seq: int
    datastore_id: str
    source_id: str
    destination_id: str
    destination_version: int
    completes_at: float
    result: dicom.Content
    failure: str | None
    frames: int


@dataclass
class Counters:
    copies_requested: int = 0
    copies_executed: int = 0
    copies_succeeded: int = 0
    copies_failed: int = 0
    frames_copied: int = 0


# Modelled operations this emulator refuses with a ValidationException (in their error lists).
_UNSUPPORTED = frozenset({"UpdateImageSetMetadata", "StartDICOMImportJob"})

_OPERATIONS: dict[str, str] = {
    "CreateDatastore": "_create_datastore",
    "GetDatastore": "_get_datastore",
    "ListDatastores": "_list_datastores",
    "DeleteDatastore": "_delete_datastore",
    "CopyImageSet": "_copy_image_set",
    "GetImageSet": "_get_image_set",
    "GetImageSetMetadata": "_get_image_set_metadata",
    "GetImageFrame": "_get_image_frame",
    "ListImageSetVersions": "_list_image_set_versions",
    "SearchImageSets": "_search_image_sets",
    "DeleteImageSet": "_delete_image_set",
    "GetDICOMImportJob": "_get_dicom_import_job",
    "ListDICOMImportJobs": "_list_dicom_import_jobs",
    "TagResource": "_tag_resource",
    "UntagResource": "_untag_resource",
    "ListTagsForResource": "_list_tags_for_resource",
}


class HealthImaging:
    """One account and region of the service. Thread-safe: one RLock around everything."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time,
                 *, id_seed: int = 0) -> None:
        self.config = config
        self.lock = threading.RLock()
        self._clock = OffsetClock(clock)
        self._id_seed = id_seed
        self._token_secret = hashlib.sha256(f"batchcopy-emulator-token:{id_seed}".encode()).hexdigest()
        self.reset()

    # ================================================================ public API
    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        handler_name = _OPERATIONS.get(operation)
        if handler_name is None and operation not in _UNSUPPORTED:
            raise ValidationException(f"Unknown operation {operation}")
        with self.lock:
            self._advance()
            if handler_name is None:
                return self._unsupported(operation, params)
            handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, handler_name)
            return handler(params)

    def reset(self) -> None:
        with self.lock:
            self._datastores: dict[str, Datastore] = {}
            self._client_tokens: dict[str, str] = {}
            self._tags: dict[str, dict[str, str]] = {}
            self._pending: list[PendingCopy] = []
            self._counters = Counters()
            self._id_counter = 0
            self._seq = 0
            self._clock.offset_s = 0.0

    def set_clock(self, offset_s: float | None = None,
                  advance_s: float | None = None) -> dict[str, float]:
        """Set the clock's offset and/or move it by advance_s; pending work that is due by
        the new time completes now. Returns {"offset_s", "now"}. ValueError on bad input."""
        with self.lock:
            self._clock.move(offset_s, advance_s)
            self._advance()
            return self._clock.reading()

    def clock(self) -> dict[str, float]:
        """{"offset_s": the clock's offset, "now": the emulated epoch time}."""
        with self.lock:
            self._advance()
            return self._clock.reading()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            self._advance()
            live = [s for ds in self._datastores.values() for s in ds.image_sets.values()
                    if s.state != DELETED]
            c = self._counters
            return {
                "copies_requested": c.copies_requested,
                "copies_executed": c.copies_executed,
                "copies_succeeded": c.copies_succeeded,
                "copies_failed": c.copies_failed,
                "copies_in_flight": len(self._pending),
                "frames_copied": c.frames_copied,
                "datastores": len(self._datastores),
                "image_sets": len(live),
                "image_set_versions": sum(len(s.versions) for s in live),
            }

    def snapshot_image_set(self, datastore_id: str, image_set_id: str) -> dict[str, Any]:
        """For tests: the image set's versions (oldest first) and its latest content."""
        with self.lock:
            self._advance()
            iset = self._image_set(self._datastore(datastore_id), image_set_id, allow_deleted=True)
            latest = iset.latest
            study = latest.content["Study"]["DICOM"]
            return {
                "datastoreId": datastore_id,
                "imageSetId": iset.id,
                "state": iset.state,
                "latestVersionId": str(latest.number),
                "workflowStatus": latest.workflow,
                "message": latest.message if latest.workflow in FAILED_WORKFLOWS else None,
                "isPrimary": latest.is_primary,
                "createdAt": iset.created_at,
                "updatedAt": iset.updated_at,
                "patientId": latest.content["Patient"]["DICOM"].get("PatientID"),
                "studyInstanceUID": study.get("StudyInstanceUID"),
                "versions": [{"versionId": str(v.number), "workflowStatus": v.workflow,
                              "message": v.message if v.workflow in FAILED_WORKFLOWS else None,
                              "isPrimary": v.is_primary, "forced": v.forced,
                              "updatedAt": v.updated_at,
                              "instanceCount": dicom.instance_count(v.content)}
                             for v in iset.versions],
                "instances": dicom.instances_by_series(latest.content),
                "frames": dicom.frame_count(latest.content),
            }

    # ---- direct construction (seed.py; not part of the AWS API)
    def add_datastore(self, name: str, datastore_id: str | None = None) -> str:
        with self.lock:
            self._advance()
            return self._add_datastore(name, datastore_id).id

    def import_image_set(self, datastore_id: str, content: dicom.Content,
                         image_set_id: str | None = None, is_primary: bool = True) -> str:
        """Store a copy of `content` (dicom.Content, JSON-able) as a new image set:
        version 1, ACTIVE / CREATED."""
        owned = json.loads(json.dumps(content))
        with self.lock:
            self._advance()
            ds = self._datastore(datastore_id)
            if image_set_id is not None and self._id_taken(image_set_id):
                raise ConflictException(f"Image set {image_set_id} already exists")
            return self._new_image_set(ds, owned, is_primary, self._now(), image_set_id).id

    def exists(self, datastore_id: str, image_set_id: str | None = None) -> bool:
        with self.lock:
            ds = self._datastores.get(datastore_id)
            if ds is None or image_set_id is None:
                return ds is not None
            return image_set_id in ds.image_sets

    # ================================================================ internals
    def _now(self) -> float:
        return round(self._clock(), 3)

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

    def _add_datastore(self, name: str, datastore_id: str | None = None) -> Datastore:
        if datastore_id is not None and self._id_taken(datastore_id):
            raise ConflictException(f"Datastore {datastore_id} already exists")
        now = self._now()
        ds = Datastore(id=datastore_id or self._new_id("datastore"), name=name,
                       seq=self._next_seq(), created_at=now, updated_at=now)
        self._datastores[ds.id] = ds
        return ds

    def _new_image_set(self, ds: Datastore, content: dicom.Content, is_primary: bool,
                       now: float, image_set_id: str | None = None) -> ImageSet:
        iset = ImageSet(id=image_set_id or self._new_id("imageset"), datastore_id=ds.id,
                        created_at=now, updated_at=now,
                        versions=[Version(1, "CREATED", is_primary, now, content)])
        ds.image_sets[iset.id] = iset
        return iset

    # ---- the copy state machine
    def _advance(self) -> None:
        if not self._pending:
            return
        now = self._clock()
        due = sorted((c for c in self._pending if c.completes_at <= now),
                     key=lambda c: (c.completes_at, c.seq))
        if not due:
            return
        self._pending = [c for c in self._pending if c.completes_at > now]
        for copy in due:
            self._complete(copy)

    def _complete(self, copy: PendingCopy) -> None:
        at = round(copy.completes_at, 3)
        ds = self._datastores[copy.datastore_id]
        source = ds.image_sets[copy.source_id]
        source.state, source.updated_at = ACTIVE, at
        source.latest.workflow, source.latest.updated_at = "COPIED", at
        dest = ds.image_sets[copy.destination_id]
        version = dest.versions[copy.destination_version - 1]
        version.content = copy.result
        version.updated_at = at
        version.workflow = "COPY_FAILED" if copy.failure else "COPIED"
        version.message = copy.failure
        dest.state, dest.updated_at, dest.writing = ACTIVE, at, None
        c = self._counters
        c.copies_executed += 1
        if copy.failure:
            c.copies_failed += 1
        else:
            c.copies_succeeded += 1
            c.frames_copied += copy.frames

    # ---- pagination: opaque, signed, bound to operation and scope
    def _token(self, operation: str, scope: str, key: Any) -> str:
        payload = json.dumps([operation, scope, key], separators=(",", ":"))
        sig = hashlib.sha256((self._token_secret + payload).encode()).hexdigest()[:16]
        return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=") + "." + sig

    def _untoken(self, token: str | None, operation: str, scope: str) -> Any:
        if token is None:
            return None
        try:
            b64, sig = token.rsplit(".", 1)
            payload = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode()
            expected = hashlib.sha256((self._token_secret + payload).encode()).hexdigest()[:16]
            op, sc, key = json.loads(payload)
        except (ValueError, binascii.Error, UnicodeDecodeError, TypeError):
            raise ValidationException("Invalid nextToken") from None
        if sig != expected or op != operation or sc != scope:
            raise ValidationException("Invalid nextToken")
        return key

    @staticmethod
    def _page_size(params: dict[str, Any]) -> int:
        return int(params.get("maxResults") or DEFAULT_PAGE_SIZE)

    # ================================================================ data stores
    def _create_datastore(self, p: dict[str, Any]) -> dict[str, Any]:
        token = p.get("clientToken")
        if token and token in self._client_tokens:
            ds = self._datastores.get(self._client_tokens[token])
            if ds is not None:
                return {"datastoreId": ds.id, "datastoreStatus": ds.status}
        ds = self._add_datastore(p.get("datastoreName") or "datastore")
        if p.get("datastoreName") is None:
            ds.name = f"datastore-{ds.id[:8]}"
        ds.kms_key_arn = p.get("kmsKeyArn")
        ds.lambda_authorizer_arn = p.get("lambdaAuthorizerArn")
        if token:
            self._client_tokens[token] = ds.id
        if p.get("tags"):
            self._tags[self._arn(ds.id)] = dict(p["tags"])
        return {"datastoreId": ds.id, "datastoreStatus": ds.status}

    def _datastore_summary(self, ds: Datastore) -> dict[str, Any]:
        out = {"datastoreId": ds.id, "datastoreName": ds.name, "datastoreStatus": ds.status,
               "datastoreArn": self._arn(ds.id), "createdAt": ds.created_at,
               "updatedAt": ds.updated_at}
        return out

    def _get_datastore(self, p: dict[str, Any]) -> dict[str, Any]:
        ds = self._datastore(p["datastoreId"])
        props = self._datastore_summary(ds)
        if ds.kms_key_arn:
            props["kmsKeyArn"] = ds.kms_key_arn
        if ds.lambda_authorizer_arn:
            props["lambdaAuthorizerArn"] = ds.lambda_authorizer_arn
        return {"datastoreProperties": props}

    def _list_datastores(self, p: dict[str, Any]) -> dict[str, Any]:
        status = p.get("datastoreStatus")
        scope = status or ""
        after = self._untoken(p.get("nextToken"), "ListDatastores", scope) or 0
        items = sorted((ds for ds in self._datastores.values()
                        if ds.seq > after and (status is None or ds.status == status)),
                       key=lambda ds: ds.seq)
        page, rest = items[:self._page_size(p)], items[self._page_size(p):]
        out: dict[str, Any] = {"datastoreSummaries": [self._datastore_summary(ds) for ds in page]}
        if rest:
            out["nextToken"] = self._token("ListDatastores", scope, page[-1].seq)
        return out

    def _delete_datastore(self, p: dict[str, Any]) -> dict[str, Any]:
        ds = self._datastore(p["datastoreId"])
        live = sum(1 for s in ds.image_sets.values() if s.state != DELETED)
        if live:
            raise ConflictException(
                f"Datastore {ds.id} still holds {live} image sets; delete them first")
        del self._datastores[ds.id]
        self._tags.pop(self._arn(ds.id), None)
        for iset_id in ds.image_sets:
            self._tags.pop(self._arn(ds.id, iset_id), None)
        return {"datastoreId": ds.id, "datastoreStatus": "DELETING"}

    # ================================================================ image sets
    def _get_image_set(self, p: dict[str, Any]) -> dict[str, Any]:
        ds = self._datastore(p["datastoreId"])
        iset = self._image_set(ds, p["imageSetId"], allow_deleted=True)
        v = iset.version(p.get("versionId", p.get("version")))
        out = {"datastoreId": ds.id, "imageSetId": iset.id, "versionId": str(v.number),
               "imageSetState": iset.state, "imageSetWorkflowStatus": v.workflow,
               "createdAt": iset.created_at, "updatedAt": v.updated_at,
               "imageSetArn": self._arn(ds.id, iset.id), "isPrimary": v.is_primary}
        self._version_extras(out, iset, v)
        return out

    @staticmethod
    def _version_extras(out: dict[str, Any], iset: ImageSet, v: Version) -> None:
        if v.message and v.workflow in FAILED_WORKFLOWS:
            out["message"] = v.message
        if v.forced:
            out["overrides"] = {"forced": True}
        if iset.deleted_at is not None:
            out["deletedAt"] = iset.deleted_at

    def _readable_version(self, p: dict[str, Any]) -> tuple[Datastore, ImageSet, Version]:
        ds = self._datastore(p["datastoreId"])
        iset = self._image_set(ds, p["imageSetId"])
        v = iset.version(p.get("versionId", p.get("version")))
        if iset.writing == v.number:
            raise ConflictException(
                f"Version {v.number} of image set {iset.id} is being written by a copy")
        return ds, iset, v

    def _get_image_set_metadata(self, p: dict[str, Any]) -> dict[str, Any]:
        ds, iset, v = self._readable_version(p)
        blob = dicom.gzip_json(dicom.metadata_document(ds.id, iset.id, v.content))
        return {"imageSetMetadataBlob": blob, "contentType": "application/json",
                "contentEncoding": "gzip"}

    def _get_image_frame(self, p: dict[str, Any]) -> dict[str, Any]:
        _, iset, v = self._readable_version({k: p[k] for k in ("datastoreId", "imageSetId")})
        frame_id = p["imageFrameInformation"]["imageFrameId"]
        frame = dicom.find_frame(v.content, frame_id)
        if frame is None:
            raise ResourceNotFoundException(f"Image frame {frame_id} not found in image set {iset.id}")
        return {"imageFrameBlob": dicom.frame_bytes(frame_id, frame.get("FrameSizeInBytes", 0)),
                "contentType": "application/octet-stream"}

    def _list_image_set_versions(self, p: dict[str, Any]) -> dict[str, Any]:
        ds = self._datastore(p["datastoreId"])
        iset = self._image_set(ds, p["imageSetId"], allow_deleted=True)
        oldest_first = self.config.reading("version_order") == "oldest_first"
        scope = f"{ds.id}/{iset.id}/{'oldest' if oldest_first else 'newest'}"
        after = self._untoken(p.get("nextToken"), "ListImageSetVersions", scope)
        if oldest_first:
            ordered = [v for v in iset.versions if after is None or v.number > after]
        else:
            ordered = [v for v in reversed(iset.versions) if after is None or v.number < after]
        size = self._page_size(p)
        page = ordered[:size]
        items = []
        for v in page:
            item = {"imageSetId": iset.id, "versionId": str(v.number), "imageSetState": iset.state,
                    "ImageSetWorkflowStatus": v.workflow, "createdAt": iset.created_at,
                    "updatedAt": v.updated_at, "isPrimary": v.is_primary}
            self._version_extras(item, iset, v)
            items.append(item)
        out: dict[str, Any] = {"imageSetPropertiesList": items}
        if len(ordered) > size:
            out["nextToken"] = self._token("ListImageSetVersions", scope, page[-1].number)
        return out

    def _delete_image_set(self, p: dict[str, Any]) -> dict[str, Any]:
        ds = self._datastore(p["datastoreId"])
        iset = self._image_set(ds, p["imageSetId"])
        if iset.state == LOCKED:
            raise ConflictException(f"Image set {iset.id} is LOCKED by a running copy")
        now = self._now()
        iset.state, iset.deleted_at, iset.updated_at = DELETED, now, now
        iset.latest.workflow, iset.latest.updated_at = "DELETED", now
        return {"datastoreId": ds.id, "imageSetId": iset.id, "imageSetState": LOCKED,
                "imageSetWorkflowStatus": "DELETING"}

    # ---- SearchImageSets
    def _search_image_sets(self, p: dict[str, Any]) -> dict[str, Any]:
        ds = self._datastore(p["datastoreId"])
        criteria = p.get("searchCriteria") or {}
        predicates = [dicom.search_predicate(f) for f in criteria.get("filters") or []]
        sort = criteria.get("sort") or {"sortField": "updatedAt", "sortOrder": "DESC"}
        scope = hashlib.sha256(
            (ds.id + json.dumps(criteria, sort_keys=True, default=str)).encode()).hexdigest()[:24]
        offset = self._untoken(p.get("nextToken"), "SearchImageSets", scope) or 0
        rows = [dicom.SearchRow(s.id, s.created_at, s.updated_at, s.latest.is_primary,
                                s.latest.number, s.latest.content)
                for s in ds.image_sets.values() if s.state != DELETED]
        hits = [row for row in rows if all(pred(row) for pred in predicates)]
        hits.sort(key=dicom.search_sort_key(sort["sortField"]), reverse=sort["sortOrder"] == "DESC")
        size = self._page_size(p)
        page = hits[offset:offset + size]
        out: dict[str, Any] = {
            "imageSetsMetadataSummaries": [
                {"imageSetId": row.image_set_id, "version": row.version,
                 "createdAt": row.created_at, "updatedAt": row.updated_at,
                 "DICOMTags": dicom.dicom_tags(row.content), "isPrimary": row.is_primary}
                for row in page],
        }
        if criteria.get("sort"):
            out["sort"] = dict(criteria["sort"])
        if offset + size < len(hits):
            out["nextToken"] = self._token("SearchImageSets", scope, offset + size)
        return out

    # ================================================================ CopyImageSet
    def _copy_image_set(self, p: dict[str, Any]) -> dict[str, Any]:
        ds = self._datastore(p["datastoreId"])
        info = p["copyImageSetInformation"]
        src_info = info["sourceImageSet"]
        dst_info = info.get("destinationImageSet")
        force, promote = bool(p.get("force", False)), bool(p.get("promoteToPrimary", False))
        source_id = p["sourceImageSetId"]
        if dst_info is not None and dst_info["imageSetId"] == source_id:
            raise ValidationException("The source and destination image sets must differ")
        request = None
        if src_info.get("DICOMCopies") is not None:
            request = dicom.parse_copiable_attributes(
                src_info["DICOMCopies"]["copiableAttributes"], self.config.max_copiable_attributes_chars,
                number_ok=self.config.reading("schema_version") == "number_ok")

        source = self._image_set(ds, source_id, "Source image set")
        dest = None if dst_info is None else \
            self._image_set(ds, dst_info["imageSetId"], "Destination image set")
        for role, iset in (("Source", source), ("Destination", dest)):
            if iset is not None and iset.state == LOCKED:
                raise ConflictException(
                    f"{role} image set {iset.id} is LOCKED ({iset.latest.workflow}); "
                    "it takes part in another copy")
        for role, iset, given in (("source", source, src_info["latestVersionId"]),
                                  ("destination", dest, (dst_info or {}).get("latestVersionId"))):
            if iset is not None and version_number(given) != iset.latest.number:
                raise ConflictException(
                    f"latestVersionId {given} of the {role} image set {iset.id} is not its "
                    f"latest version ({iset.latest.number})")

        selection = dicom.resolve_selection(request, source.latest.content)
        frames = dicom.selected_frames(source.latest.content, selection)
        if frames > self.config.max_frames_per_copy:
            raise ServiceQuotaExceededException(
                f"The copy selects {frames} image frames; the limit per CopyImageSet is "
                f"{self.config.max_frames_per_copy}")
        in_flight = sum(1 for c in self._pending if c.datastore_id == ds.id)
        if in_flight >= self.config.max_concurrent_copies_per_datastore:
            raise ServiceQuotaExceededException(
                f"{in_flight} copies are already running in datastore {ds.id}; the limit is "
                f"{self.config.max_concurrent_copies_per_datastore}")

        now = self._now()
        if dest is None:
            target = self._new_image_set(ds, dicom.skeleton(source.latest.content), promote, now)
        elif promote and not dest.latest.is_primary:
            target = self._new_image_set(ds, dicom.clone(dest.latest.content), True, now)
        else:
            target = dest
        base = target.latest.content
        result, reason = dicom.merge(base, source.latest.content, selection, force)
        failure = None if reason is None else self._invalid_request(reason)
        new_version = Version(target.latest.number + 1, "COPYING", target.latest.is_primary,
                              now, base, forced=force)
        target.versions.append(new_version)
        target.state, target.updated_at, target.writing = LOCKED, now, new_version.number
        source.state, source.updated_at = LOCKED, now
        source.latest.workflow, source.latest.updated_at = "COPYING_WITH_READ_ONLY_ACCESS", now

        duration = self.config.scaled(self.config.copy_base_s + frames * self.config.copy_per_frame_s)
        self._pending.append(PendingCopy(
            seq=self._next_seq(), datastore_id=ds.id, source_id=source.id,
            destination_id=target.id, destination_version=new_version.number,
            completes_at=self._clock() + duration, result=result, failure=failure, frames=frames))
        self._counters.copies_requested += 1
        return {
            "datastoreId": ds.id,
            "sourceImageSetProperties": self._copy_properties(ds, source),
            "destinationImageSetProperties": self._copy_properties(ds, target),
        }

    def _invalid_request(self, reason: str) -> str:
        """The message of a version that failed for `reason` (copy_failed_message switch)."""
        space = "  " if self.config.reading("copy_failed_message") == "double_space" else " "
        return f"INVALID_REQUEST:{space}{reason}"

    def _copy_properties(self, ds: Datastore, iset: ImageSet) -> dict[str, Any]:
        return {"imageSetId": iset.id, "latestVersionId": str(iset.latest.number),
                "imageSetState": iset.state, "imageSetWorkflowStatus": iset.latest.workflow,
                "createdAt": iset.created_at, "updatedAt": iset.updated_at,
                "imageSetArn": self._arn(ds.id, iset.id)}

    # ================================================================ the rest
    def _unsupported(self, operation: str, p: dict[str, Any]) -> dict[str, Any]:
        if "datastoreId" in p:
            self._datastore(p["datastoreId"])
        raise ValidationException(f"{operation} is not supported by this emulator")

    def _get_dicom_import_job(self, p: dict[str, Any]) -> dict[str, Any]:
        self._datastore(p["datastoreId"])
        raise ResourceNotFoundException(
            f"Import job {p['jobId']} not found (this emulator runs no import jobs)")

    def _list_dicom_import_jobs(self, p: dict[str, Any]) -> dict[str, Any]:
        self._datastore(p["datastoreId"])
        self._untoken(p.get("nextToken"), "ListDICOMImportJobs", p["datastoreId"])
        return {"jobSummaries": []}

    def _resource_for_tags(self, arn: str) -> str:
        prefix = f"arn:aws:medical-imaging:{self.config.region}:{self.config.account_id}:datastore/"
        if not arn.startswith(prefix):
            raise ResourceNotFoundException(f"Resource {arn} not found")
        parts = arn[len(prefix):].split("/")
        ds = self._datastores.get(parts[0])
        ok = ds is not None and (len(parts) == 1 or (
            len(parts) == 3 and parts[1] == "imageset" and parts[2] in ds.image_sets
            and ds.image_sets[parts[2]].state != DELETED))
        if not ok:
            raise ResourceNotFoundException(f"Resource {arn} not found")
        return arn

    def _tag_resource(self, p: dict[str, Any]) -> dict[str, Any]:
        arn = self._resource_for_tags(p["resourceArn"])
        self._tags.setdefault(arn, {}).update(p["tags"])
        return {}

    def _untag_resource(self, p: dict[str, Any]) -> dict[str, Any]:
        arn = self._resource_for_tags(p["resourceArn"])
        tags = self._tags.get(arn, {})
        for key in p.get("tagKeys") or []:
            tags.pop(key, None)
        return {}

    def _list_tags_for_resource(self, p: dict[str, Any]) -> dict[str, Any]:
        arn = self._resource_for_tags(p["resourceArn"])
        return {"tags": dict(self._tags.get(arn, {}))}
