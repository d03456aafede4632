"""The rules of AWS HealthImaging, as plain Python objects (no HTTP here).

`HealthImaging.call(operation, params)` takes the botocore input-member names
with Python values (wire.py has already checked types, patterns and ranges) and
returns the output-member names, timestamps as float epoch seconds. Errors are
`batchcopy.emulator.errors.ServiceError` subclasses.

Copies, updates and deletions are asynchronous but need no background task: every
public method first runs `_advance()`, which finishes every piece of pending work
whose time has come by the model's clock (clock.py), in completion order. A test
that owns the clock is therefore deterministic.

Layout: state.py (the stored values), pending.py (the queue of accepted work),
core.py (state + shared rules), copying.py (CopyImageSet), updating.py and
metadata_updates.py (UpdateImageSetMetadata), extras.py (tags, import jobs); this module adds the
public API, data stores, reads, search, deletion and tags.
Everything the public documentation leaves open is listed in ASSUMPTIONS.md and,
where a client could tell readings apart, is a switch in assumptions.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from typing import Any

from batchcopy.emulator import dicom
from batchcopy.emulator.copying import Copying
from batchcopy.emulator.extras import Extras
from batchcopy.emulator.updating import Updating
from batchcopy.emulator.errors import (
    ConflictException,
    ResourceNotFoundException,
    ThrottlingException,
    ValidationException,
)
from batchcopy.emulator.pending import (
    PendingConsistency,
    PendingCopy,
    PendingDelete,
    PendingUpdate,
    Work,
)
from batchcopy.emulator.state import (
    ACTIVE,
    DELETED,
    FAILED_WORKFLOWS,
    LOCKED,
    Datastore,
    ImageSet,
    Version,
    version_number,
)

__all__ = ["ACTIVE", "DELETED", "FAILED_WORKFLOWS", "LOCKED", "HealthImaging", "version_number"]

DEFAULT_PAGE_SIZE = 50


# Modelled operations this emulator refuses with a ValidationException (in their error lists).
_UNSUPPORTED = frozenset({"StartDICOMImportJob"})

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
    "UpdateImageSetMetadata": "_update_image_set_metadata",
    "GetDICOMImportJob": "_get_dicom_import_job",
    "ListDICOMImportJobs": "_list_dicom_import_jobs",
    "TagResource": "_tag_resource",
    "UntagResource": "_untag_resource",
    "ListTagsForResource": "_list_tags_for_resource",
}


class HealthImaging(Copying, Updating, Extras):
    """One account and region of the service. Thread-safe: one RLock around everything.

    HealthImaging(config, clock=time.time, *, id_seed=0): `clock` is the base of the
    emulated clock (tests pass a fake one); set_clock moves an offset over it.
    """

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
                "copies_in_flight": self._queue.count(PendingCopy),
                "frames_copied": c.frames_copied,
                "updates_requested": c.updates_requested,
                "updates_succeeded": c.updates_succeeded,
                "updates_failed": c.updates_failed,
                "updates_in_flight": self._queue.count(PendingUpdate),
                "deletes_requested": c.deletes_requested,
                "deletes_in_flight": self._queue.count(PendingDelete),
                "datastores": len(self._datastores),
                "image_sets": len(live),
                "image_set_versions": sum(len(s.versions) for s in live),
            }

    def copies(self) -> list[dict[str, Any]]:
        """Every accepted copy's life (timeline.py), in acceptance order."""
        with self.lock:
            self._advance()
            return self._timeline.records()

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
                "workflowStatus": iset.shown_workflow(latest),
                "message": latest.message if latest.workflow in FAILED_WORKFLOWS else None,
                "isPrimary": latest.is_primary,
                "createdAt": iset.created_at,
                "updatedAt": iset.updated_at,
                "patientId": latest.content["Patient"]["DICOM"].get("PatientID"),
                "studyInstanceUID": study.get("StudyInstanceUID"),
                "versions": [{"versionId": str(v.number), "workflowStatus": v.workflow,
                              "message": v.message if v.workflow in FAILED_WORKFLOWS else None,
                              "isPrimary": v.is_primary, "forced": v.forced,
                              "createdAt": v.created_at, "updatedAt": v.updated_at,
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
                         image_set_id: str | None = None, is_primary: bool = True,
                         workflow: str = "CREATED") -> str:
        """Store a copy of `content` (dicom.Content, JSON-able) as a new image set:
        version 1, ACTIVE / `workflow` (an import job's image set reads IMPORTED; one
        that duplicates a primary image set's instances stays non-primary)."""
        owned = json.loads(json.dumps(content))
        with self.lock:
            self._advance()
            ds = self._datastore(datastore_id)
            if image_set_id is not None and self._id_taken(image_set_id):
                raise ConflictException(f"Image set {image_set_id} already exists")
            iset = self._new_image_set(ds, self._now(), image_set_id, first=(owned, is_primary))
            iset.versions[0].workflow = workflow
            return iset.id

    def exists(self, datastore_id: str, image_set_id: str | None = None) -> bool:
        with self.lock:
            ds = self._datastores.get(datastore_id)
            if ds is None or image_set_id is None:
                return ds is not None
            return image_set_id in ds.image_sets

    # ================================================================ internals
    def _finish(self, work: Work) -> None:
        if isinstance(work, PendingCopy):
            self._finish_copy(work)
        elif isinstance(work, PendingUpdate):
            self._finish_update(work)
        elif isinstance(work, PendingConsistency):
            self._finish_consistency(work)
        elif isinstance(work, PendingDelete):
            self._finish_delete(work)
        else:
            super()._finish(work)

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
        iset = self._check_readable(self._image_set(ds, p["imageSetId"], allow_deleted=True))
        v = iset.version(p.get("versionId", p.get("version")))
        self._timeline.read(iset.id, v.number, self._clock())
        return {"datastoreId": ds.id, **self._version_view(iset, v, "imageSetWorkflowStatus"),
                "imageSetArn": self._arn(ds.id, iset.id)}

    def _version_view(self, iset: ImageSet, v: Version, status_key: str) -> dict[str, Any]:
        """What GetImageSet and ListImageSetVersions say about one version (ListImageSetVersions
        spells the status key with a capital I)."""
        shown = iset.shown_workflow(v)
        stamps = self.config.reading("version_timestamps")
        out: dict[str, Any] = {
            "imageSetId": iset.id, "versionId": str(v.number), "imageSetState": iset.state,
            status_key: shown,
            "createdAt": v.created_at if stamps == "per_version" else iset.created_at,
            "updatedAt": iset.updated_at if stamps == "image_set_both" else v.updated_at,
            "isPrimary": v.is_primary}
        if v.message and shown in FAILED_WORKFLOWS:
            out["message"] = v.message
        if v.forced:
            out["overrides"] = {"forced": True}
        if iset.deleted_at is not None:
            out["deletedAt"] = iset.deleted_at
        return out

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
        self._check_readable(iset)
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
        iset = self._check_readable(self._image_set(ds, p["imageSetId"], allow_deleted=True))
        oldest_first = self.config.reading("version_order") == "oldest_first"
        scope = f"{ds.id}/{iset.id}/{'oldest' if oldest_first else 'newest'}"
        after = self._untoken(p.get("nextToken"), "ListImageSetVersions", scope)
        if oldest_first:
            ordered = [v for v in iset.versions if after is None or v.number > after]
        else:
            ordered = [v for v in reversed(iset.versions) if after is None or v.number < after]
        size = self._page_size(p)
        page = ordered[:size]
        out: dict[str, Any] = {"imageSetPropertiesList": [
            self._version_view(iset, v, "ImageSetWorkflowStatus") for v in page]}
        if len(ordered) > size:
            out["nextToken"] = self._token("ListImageSetVersions", scope, page[-1].number)
        return out

    def _delete_image_set(self, p: dict[str, Any]) -> dict[str, Any]:
        """Asynchronous: LOCKED / DELETING for `config.delete_s`, then DELETED."""
        ds = self._datastore(p["datastoreId"])
        iset = self._image_set(ds, p["imageSetId"])
        self._check_writable(iset, "Image set")
        running = self._queue.count(PendingDelete, ds.id)
        if running >= self.config.max_concurrent_deletes_per_datastore:
            # DeleteImageSet lists no ServiceQuotaExceededException: the throttle is the
            # modelled error closest to "too many at once".
            raise ThrottlingException(
                f"{running} image set deletions are already running in datastore {ds.id}")
        iset.deleting, iset.updated_at = True, self._now()
        self._queue.push(PendingDelete(seq=self._next_seq(), completes_at=self._due_in(self.config.delete_s),
                                       datastore_id=ds.id, image_set_id=iset.id))
        self._counters.deletes_requested += 1
        return {"datastoreId": ds.id, "imageSetId": iset.id, "imageSetState": iset.state,
                "imageSetWorkflowStatus": iset.shown_workflow(iset.latest)}

    def _finish_delete(self, work: PendingDelete) -> None:
        iset = self._datastores[work.datastore_id].image_sets[work.image_set_id]
        at = round(work.completes_at, 3)
        iset.deleting, iset.deleted_at, iset.updated_at = False, at, at

    # ---- SearchImageSets
    def _search_image_sets(self, p: dict[str, Any]) -> dict[str, Any]:
        ds = self._datastore(p["datastoreId"])
        criteria = p.get("searchCriteria") or {}
        filters = criteria.get("filters") or []
        dicom.check_filter_pair(filters, self.config.reading("search_filter_pairs"))
        exclusive = self.config.reading("search_between_upper") == "exclusive"
        predicates = [dicom.search_predicate(f, upper_exclusive=exclusive) for f in filters]
        sort = criteria.get("sort") or {"sortField": "updatedAt", "sortOrder": "DESC"}
        scope = hashlib.sha256(
            (ds.id + json.dumps(criteria, sort_keys=True, default=str)).encode()).hexdigest()[:24]
        offset = self._untoken(p.get("nextToken"), "SearchImageSets", scope) or 0
        hide_new = self.config.reading("search_visibility") == "when_active"
        rows = [dicom.SearchRow(s.id, s.created_at, s.updated_at, s.latest.is_primary,
                                s.latest.number, s.latest.content)
                for s in ds.image_sets.values()
                if s.state != DELETED and not (hide_new and s.first_copy_running)]
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
