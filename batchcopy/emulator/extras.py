"""Operations a bulk copy never calls, emulated for completeness: tags, DICOM import jobs
(none run here), and the modelled operations this emulator refuses."""

from __future__ import annotations

from typing import Any

from batchcopy.emulator.core import ModelCore
from batchcopy.emulator.errors import ResourceNotFoundException, ValidationException
from batchcopy.emulator.state import DELETED


class Extras(ModelCore):
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
