"""UpdateImageSetMetadata: DICOMUpdates or revertToVersionId, asynchronous like a copy.

An accepted update makes version latest + 1 (LOCKED / UPDATING) for `config.update_s`,
then ACTIVE / UPDATED, or UPDATE_FAILED with a message and the previous content. A
revert makes a new version whose content equals the named older version's. The
`stale_version`, `locked`, `missing_subset_key` and `concurrency_limit_error` switches
apply as they do to copies; metadata_updates.py holds the content rules.
"""

from __future__ import annotations

from typing import Any

from batchcopy.emulator import dicom, metadata_updates
from batchcopy.emulator.core import ModelCore
from batchcopy.emulator.errors import ValidationException
from batchcopy.emulator.pending import PendingUpdate
from batchcopy.emulator.state import FAILED_WORKFLOWS, ImageSet, Version


class Updating(ModelCore):
    def _update_image_set_metadata(self, p: dict[str, Any]) -> dict[str, Any]:
        ds = self._datastore(p["datastoreId"])
        iset = self._image_set(ds, p["imageSetId"])
        if p.get("includeStudyImageSets"):
            raise ValidationException("includeStudyImageSets is not supported by this emulator")
        updates = p["updateImageSetMetadataUpdates"]
        force = bool(p.get("force", False))
        revert = updates.get("revertToVersionId")
        docs = None if revert is not None else self._dicom_updates(updates.get("DICOMUpdates") or {})
        self._check_writable(iset, "Image set")
        reasons = [self._check_latest(iset, p["latestVersionId"], "image set")]
        current = iset.latest
        if revert is not None:
            self._check_revert(iset, iset.version(revert))
            result, reason = dicom.clone(iset.version(revert).content), None
        else:
            assert docs is not None
            missing = metadata_updates.find_missing(current.content, *docs)
            if missing is None:
                result, reason = metadata_updates.apply(current.content, *docs,
                                                        self._update_rules(current, force))
            elif self.config.reading("missing_subset_key") == "validation":
                raise ValidationException(missing)
            else:
                result, reason = current.content, missing + "."
        running = self._queue.count(PendingUpdate, ds.id)
        if running >= self.config.max_concurrent_updates_per_datastore:
            raise self._quota_error("concurrency_limit_error", (
                f"{running} metadata updates are already running in datastore {ds.id}; the limit "
                f"is {self.config.max_concurrent_updates_per_datastore}"))

        failure = next((r for r in reasons if r is not None), reason)
        now = self._now()
        version = self._begin_version(iset, now, "UPDATING", current.is_primary, current.content, force)
        self._queue.push(PendingUpdate(
            seq=self._next_seq(), completes_at=self._due_in(self.config.update_s), datastore_id=ds.id,
            image_set_id=iset.id, version=version.number,
            result=dicom.clone(current.content) if failure else result,
            failure=None if failure is None else self._invalid_request(failure)))
        self._counters.updates_requested += 1
        return {"datastoreId": ds.id, "imageSetId": iset.id, "latestVersionId": str(version.number),
                "imageSetState": iset.state, "imageSetWorkflowStatus": version.workflow,
                "createdAt": iset.created_at, "updatedAt": iset.updated_at}

    def _check_revert(self, iset: ImageSet, target: Version) -> None:
        """`revert_primary` and `revert_to_failed`: reverts the service may refuse at once."""
        if iset.latest.is_primary and self.config.reading("revert_primary") == "refused":
            raise ValidationException(
                f"Image set {iset.id} is primary: the Patient and Series level metadata of a "
                "primary image set cannot be updated (revertToVersionId included)")
        if target.workflow in FAILED_WORKFLOWS and \
                self.config.reading("revert_to_failed") == "validation":
            raise ValidationException(
                f"Version {target.number} of image set {iset.id} is {target.workflow}: it "
                "cannot be reverted to")

    @staticmethod
    def _dicom_updates(blobs: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(updatable, removable) documents; at least one must be given."""
        if not blobs.get("updatableAttributes") and not blobs.get("removableAttributes"):
            raise ValidationException(
                "DICOMUpdates must contain updatableAttributes or removableAttributes")
        return tuple(  # type: ignore[return-value]
            None if blobs.get(key) is None else metadata_updates.parse(blobs[key], key)
            for key in ("updatableAttributes", "removableAttributes"))

    def _update_rules(self, current: Version, force: bool) -> metadata_updates.UpdateRules:
        """The 2025 guide: a primary image set (when image sets are series) keeps its
        Patient and Series attributes and its UIDs, force or not."""
        series = self.config.reading("image_set_model") == "series"
        return metadata_updates.UpdateRules(force=force, primary_locked=series and current.is_primary)

    def _finish_update(self, work: PendingUpdate) -> None:
        iset: ImageSet = self._datastores[work.datastore_id].image_sets[work.image_set_id]
        version = iset.versions[work.version - 1]
        at = round(work.completes_at, 3)
        if work.failure:
            self._end_version(iset, version, at, "UPDATE_FAILED", work.failure, work.result)
            self._counters.updates_failed += 1
        else:
            self._end_version(iset, version, at, "UPDATED", None, work.result)
            self._counters.updates_succeeded += 1
