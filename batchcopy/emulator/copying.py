"""CopyImageSet: what is refused at once, what is accepted, and how a copy ends.

Accepted copies are asynchronous: the destination gets a new version (LOCKED /
COPYING) and the source is read (LOCKED, shown COPYING_WITH_READ_ONLY_ACCESS) until
the copy's modelled duration has passed; then `_finish_copy` writes the result (and,
with `study_consistency=on`, the destination passes through
UPDATING_FOR_STUDY_CONSISTENCY before it is released).
ASSUMPTIONS.md lists every reading this module makes where the docs are silent.
"""

from __future__ import annotations

from typing import Any

from batchcopy.emulator import dicom
from batchcopy.emulator.core import ModelCore
from batchcopy.emulator.errors import ValidationException
from batchcopy.emulator.pending import PendingConsistency, PendingCopy
from batchcopy.emulator.state import FAILED_WORKFLOWS, Datastore, ImageSet


class Copying(ModelCore):
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
        self._check_writable(source, "Source image set", as_source=True)
        if dest is not None:
            self._check_writable(dest, "Destination image set")
        reasons = [self._check_latest(source, src_info["latestVersionId"], "source image set")]
        if dest is not None:
            reasons.append(self._check_latest(dest, dst_info["latestVersionId"], "destination image set"))

        selection, missing = dicom.resolve_selection(request, source.latest.content)
        if missing is not None:
            if self.config.reading("missing_subset_key") == "validation":
                raise ValidationException(missing)
            reasons.append(missing + ".")
        frames = dicom.selected_frames(source.latest.content, selection)
        self._check_copy_size(frames, dicom.selected_instances(selection))
        in_flight = self._queue.count(PendingCopy, ds.id)
        if in_flight >= self.config.max_concurrent_copies_per_datastore:
            raise self._quota_error("concurrency_limit_error", (
                f"{in_flight} copies are already running in datastore {ds.id}; the limit is "
                f"{self.config.max_concurrent_copies_per_datastore}"))

        now = self._now()
        target, base, is_primary = self._copy_target(ds, source, dest, promote, now)
        result, reason = dicom.merge(
            base, source.latest.content, selection, force,
            series_bound=is_primary and self.config.reading("image_set_model") == "series",
            duplicates_fail=self.config.reading("duplicate_sop") == "copy_failed")
        failure = next((r for r in reasons if r is not None), reason)
        version = self._begin_version(target, now, "COPYING", is_primary, base, force)
        source.readers += 1
        source.updated_at = now
        duration = self.config.copy_base_s + frames * self.config.copy_per_frame_s
        completes_at = self._due_in(duration)
        self._queue.push(PendingCopy(
            seq=self._next_seq(), completes_at=completes_at, datastore_id=ds.id,
            source_id=source.id, source_version=source.latest.number, destination_id=target.id,
            destination_version=version.number, result=dicom.clone(base) if failure else result,
            failure=None if failure is None else self._invalid_request(failure), frames=frames,
            promote=promote))
        self._counters.copies_requested += 1
        self._timeline.accepted(ds.id, target.id, version.number, source.id, frames,
                                completes_at - self.config.scaled(duration))
        return {
            "datastoreId": ds.id,
            "sourceImageSetProperties": self._copy_properties(ds, source),
            "destinationImageSetProperties": self._copy_properties(ds, target),
        }

    def _check_copy_size(self, frames: int, instances: int) -> None:
        """At most max_frames_per_copy image frames (`copy_limit_unit`: or SOP instances)."""
        limit = self.config.max_frames_per_copy
        count, unit = ((instances, "SOP instances") if self.config.reading("copy_limit_unit") == "instances"
                       else (frames, "image frames"))
        if count > limit:
            raise self._quota_error("copy_limit_error", (
                f"The copy selects {count} {unit}; the limit per CopyImageSet is {limit}"))

    def _copy_target(self, ds: Datastore, source: ImageSet, dest: ImageSet | None, promote: bool,
                     now: float) -> tuple[ImageSet, dicom.Content, bool]:
        """(the image set the copy writes, the content it starts from, its new version's isPrimary)."""
        if dest is None:
            base = dicom.skeleton(source.latest.content)
            return self._new_copy_target(ds, now, base, promote), base, promote
        if promote and not dest.latest.is_primary:
            if self.config.reading("promote_non_primary") == "in_place":
                return dest, dest.latest.content, True
            base = dicom.clone(dest.latest.content)
            return self._new_copy_target(ds, now, base, True), base, True
        return dest, dest.latest.content, dest.latest.is_primary

    def _new_copy_target(self, ds: Datastore, now: float, base: dicom.Content, is_primary: bool) -> ImageSet:
        """A new image set for a copy: with `new_copy_version` 2 its version 1 is CREATED
        (the copy writes version 2); with 1 the copy writes version 1 itself."""
        first = None if self.config.reading("new_copy_version") == "1" else (base, is_primary)
        iset = self._new_image_set(ds, now, first=first)
        iset.first_copy_running = True
        return iset

    def _finish_copy(self, copy: PendingCopy) -> None:
        at = round(copy.completes_at, 3)
        ds = self._datastores[copy.datastore_id]
        source = ds.image_sets[copy.source_id]
        source.readers -= 1
        source.updated_at = at
        read = source.versions[copy.source_version - 1]
        if read.workflow not in FAILED_WORKFLOWS:  # a failure stays on record
            read.workflow, read.updated_at = "COPIED", at
        dest = ds.image_sets[copy.destination_id]
        dest.first_copy_running = False
        version = dest.versions[copy.destination_version - 1]
        if copy.failure:
            self._end_version(dest, version, at, "COPY_FAILED", copy.failure, copy.result)
            self._timeline.ended(dest.id, version.number, "COPY_FAILED", copy.completes_at)
        elif self.config.reading("study_consistency") == "on":
            # the content is written; the destination stays LOCKED a while longer
            version.content, version.workflow = copy.result, "UPDATING_FOR_STUDY_CONSISTENCY"
            version.updated_at = dest.updated_at = at
            self._queue.push(PendingConsistency(
                seq=self._next_seq(), completes_at=copy.completes_at + self.config.scaled(
                    self.config.study_consistency_s),
                datastore_id=ds.id, image_set_id=dest.id, version=version.number))
        else:
            self._end_version(dest, version, at, "COPIED", None, copy.result)
            self._timeline.ended(dest.id, version.number, "COPIED", copy.completes_at)
        if copy.promote and not copy.failure:
            self._promoted(ds, source, dest)
        c = self._counters
        c.copies_executed += 1
        if copy.failure:
            c.copies_failed += 1
        else:
            c.copies_succeeded += 1
            c.frames_copied += copy.frames

    def _promoted(self, ds: Datastore, source: ImageSet, result: ImageSet) -> None:
        """`promote_side_effects`: what else a successful promotion leaves non-primary. The
        flag is the image set's place in the hierarchy, not content: it changes on its
        latest version in place (no version is written for it)."""
        reading = self.config.reading("promote_side_effects")
        if reading == "source_demoted":
            demoted = [source]
        elif reading == "study_demoted":
            study = _study_uid(result)
            demoted = [s for s in ds.image_sets.values()
                       if s is not result and s.versions and s.deleted_at is None
                       and _study_uid(s) == study]
        else:
            return
        for iset in demoted:
            iset.latest.is_primary = False

    def _finish_consistency(self, work: PendingConsistency) -> None:
        dest = self._datastores[work.datastore_id].image_sets[work.image_set_id]
        version = dest.versions[work.version - 1]
        self._end_version(dest, version, round(work.completes_at, 3), "COPIED", None, version.content)
        self._timeline.ended(dest.id, version.number, "COPIED", work.completes_at)

    def _copy_properties(self, ds: Datastore, iset: ImageSet) -> dict[str, Any]:
        return {"imageSetId": iset.id, "latestVersionId": str(iset.latest.number),
                "imageSetState": iset.state, "imageSetWorkflowStatus": iset.shown_workflow(iset.latest),
                "createdAt": iset.created_at, "updatedAt": iset.updated_at,
                "imageSetArn": self._arn(ds.id, iset.id)}


def _study_uid(iset: ImageSet) -> Any:
    return iset.latest.content["Study"]["DICOM"].get("StudyInstanceUID")
