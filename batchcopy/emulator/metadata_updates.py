"""UpdateImageSetMetadata's DICOMUpdates: the two JSON documents and what they do to content.

`updatableAttributes` and `removableAttributes` (blobs on the wire; JSON text) share one
shape, the metadata document's own:

    {"SchemaVersion"?: 1.1 | "1.1",
     "Patient"?: {"DICOM": {...}},
     "Study"?: {"DICOM"?: {...},
                "Series"?: {"<SeriesInstanceUID>": {
                    "DICOM"?: {...},
                    "Instances"?: {"<SOPInstanceUID>": {"DICOM"?: {...}, "DICOMVRs"?: {...}}}}}}}

Updatable attributes merge into the level that names them. Removable attributes remove
the named keys (their values are ignored); a series or an instance named with an empty
object is removed whole (the developer guide: "remove Series and SOP Instances").
Removals apply before updates.

What the developer guide's DICOM metadata constraints forbid ends the update
UPDATE_FAILED (a `reason` here; the model words the message):
  * HealthImaging-generated attributes (DatastoreID, ImageSetID, PixelData, Checksum,
    Width, Height, MinPixelValue, MaxPixelValue, FrameSizeInBytes) are never changed;
  * StudyInstanceUID, StudyID, SeriesInstanceUID, SOPInstanceUID need `force` to be
    updated, live at their own level only, and are never removed; a new Series or SOP
    Instance UID renames the series / instance and must not clash;
  * instance-level private elements (odd group number) need `force`;
  * `primary_locked` (the 2025 guide, for primary image sets when image sets are
    series): Patient- and Series-level attributes and the UIDs cannot change, force or not.
Malformed documents are ValidationExceptions raised at once. Pure functions, no state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from batchcopy.emulator import dicom
from batchcopy.emulator.errors import ValidationException

GENERATED = frozenset({"DatastoreID", "ImageSetID", "PixelData", "Checksum", "Width", "Height",
                       "MinPixelValue", "MaxPixelValue", "FrameSizeInBytes"})
UID_LEVEL = {"StudyInstanceUID": "Study", "StudyID": "Study", "SeriesInstanceUID": "Series",
             "SOPInstanceUID": "Instance"}
_PRIVATE_TAG = re.compile(r"[0-9A-Fa-f]{3}[13579BDFbdf][0-9A-Fa-f]{4}")

Doc = dict[str, Any]


@dataclass(frozen=True)
class UpdateRules:
    force: bool
    primary_locked: bool = False


# ----------------------------------------------------------------- parsing (ValidationException)

def parse(blob: bytes, where: str) -> Doc:
    """One DICOMUpdates document, shape-checked."""
    try:
        doc = json.loads(blob.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationException(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValidationException(f"{where} must be a JSON object")
    _keys(doc, {"SchemaVersion", "Patient", "Study"}, where)
    dicom.check_schema_version(doc, where, number_ok=True)
    if "Patient" in doc:
        _keys(_object(doc["Patient"], f"{where} Patient"), {"DICOM"}, f"{where} Patient")
    if "Study" in doc:
        study = _object(doc["Study"], f"{where} Study")
        _keys(study, {"DICOM", "Series"}, f"{where} Study")
        for uid, series in _object(study.get("Series", {}), f"{where} Series").items():
            here = f"{where} series {uid}"
            _keys(_object(series, here), {"DICOM", "Instances"}, here)
            for sop, instance in _object(series.get("Instances", {}), f"{here} Instances").items():
                _keys(_object(instance, f"{here} instance {sop}"), {"DICOM", "DICOMVRs"},
                      f"{here} instance {sop}")
    for level, node in _levels(doc):
        for key in ("DICOM", "DICOMVRs"):
            if key in node:
                _object(node[key], f"{where} {level} {key}")
    return doc


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationException(f"{where} must be an object")
    return value


def _keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValidationException(f"{where} has unknown keys {unknown}; allowed: {sorted(allowed)}")


def _levels(doc: Doc) -> Iterator[tuple[str, dict[str, Any]]]:
    """(level name, node) for every node of a document: Patient, Study, Series, Instance."""
    if "Patient" in doc:
        yield "Patient", doc["Patient"]
    study = doc.get("Study")
    if study is None:
        return
    yield "Study", study
    for series in study.get("Series", {}).values():
        yield "Series", series
        for instance in series.get("Instances", {}).values():
            yield "Instance", instance


# ----------------------------------------------------------------- what the content lacks

def find_missing(content: dicom.Content, *docs: Doc | None) -> str | None:
    """The first series or SOP instance a document names that `content` does not hold."""
    have = dicom.series_of(content)
    for doc in docs:
        for uid, series in ((doc or {}).get("Study") or {}).get("Series", {}).items():
            if uid not in have:
                return f"Series {uid} does not exist in the image set"
            for sop in series.get("Instances", {}):
                if sop not in have[uid]["Instances"]:
                    return f"SOP instance {sop} does not exist in series {uid} of the image set"
    return None


# ----------------------------------------------------------------- constraints and edits

def apply(content: dicom.Content, updatable: Doc | None, removable: Doc | None,
          rules: UpdateRules) -> tuple[dicom.Content, str | None]:
    """(content after the edits, None) or (content unchanged, the reason the update fails).
    Every series and instance the documents name must exist (see find_missing)."""
    reason = _violation(updatable, removable, rules)
    if reason is not None:
        return dicom.clone(content), reason
    result = dicom.clone(content)
    if removable:
        _remove(result, removable)
    if updatable:
        reason = _update(result, updatable)
        if reason is not None:
            return dicom.clone(content), reason
    return result, None


def _violation(updatable: Doc | None, removable: Doc | None, rules: UpdateRules) -> str | None:
    for doc, verb in ((updatable, "updated"), (removable, "removed")):
        for level, node in _levels(doc or {}):
            attrs = dict(node.get("DICOM") or {})
            for key in attrs:
                if key in GENERATED:
                    return f"{key} is generated by HealthImaging and cannot be {verb}."
                if key in UID_LEVEL:
                    if UID_LEVEL[key] != level:
                        return f"{key} belongs to the {UID_LEVEL[key]} level, not the {level} level."
                    if verb == "removed":
                        return f"{key} cannot be removed."
                    if rules.primary_locked:
                        return f"{key} cannot be updated on a primary image set, even with force."
                    if not rules.force:
                        return f"Updating {key} requires force."
                if level == "Instance" and _PRIVATE_TAG.fullmatch(key) and not rules.force:
                    return f"Instance level private element {key} can only be {verb} with force."
            if rules.primary_locked and level in ("Patient", "Series") and attrs:
                return f"{level} level attributes cannot be {verb} on a primary image set."
    return None


def _remove(content: dicom.Content, doc: Doc) -> None:
    if "Patient" in doc:
        content["Patient"] = {"DICOM": _without(content["Patient"]["DICOM"], doc["Patient"])}
    study = doc.get("Study")
    if study is None:
        return
    content["Study"]["DICOM"] = _without(content["Study"]["DICOM"], study)
    out = dicom.series_of(content)
    for uid, series in study.get("Series", {}).items():
        if not series:
            del out[uid]
            continue
        out[uid]["DICOM"] = _without(out[uid]["DICOM"], series)
        instances = out[uid]["Instances"]
        for sop, instance in series.get("Instances", {}).items():
            if not instance:
                del instances[sop]
                continue
            doc_now = instances[sop]
            instances[sop] = {**doc_now, "DICOM": _without(doc_now.get("DICOM", {}), instance)}
            if "DICOMVRs" in instance:
                vrs = {k: v for k, v in doc_now.get("DICOMVRs", {}).items() if k not in instance["DICOMVRs"]}
                instances[sop]["DICOMVRs"] = vrs


def _without(attrs: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    drop = node.get("DICOM") or {}
    return {k: v for k, v in attrs.items() if k not in drop}


def _update(content: dicom.Content, doc: Doc) -> str | None:
    if "Patient" in doc:
        content["Patient"] = {"DICOM": {**content["Patient"]["DICOM"], **doc["Patient"].get("DICOM", {})}}
    study = doc.get("Study")
    if study is None:
        return None
    content["Study"]["DICOM"] = {**content["Study"]["DICOM"], **study.get("DICOM", {})}
    out = dicom.series_of(content)
    for uid, series in study.get("Series", {}).items():
        entry = out[uid]
        entry["DICOM"] = {**entry["DICOM"], **series.get("DICOM", {})}
        for sop, instance in series.get("Instances", {}).items():
            now = entry["Instances"][sop]
            merged = {**now, "DICOM": {**now.get("DICOM", {}), **instance.get("DICOM", {})}}
            if "DICOMVRs" in instance:
                merged["DICOMVRs"] = {**now.get("DICOMVRs", {}), **instance["DICOMVRs"]}
            entry["Instances"][sop] = merged
    return _rename(content)


def _rename(content: dicom.Content) -> str | None:
    """Re-key series and instances whose (forced) UID attribute changed."""
    out = dicom.series_of(content)
    for uid in list(out):
        new_uid = out[uid]["DICOM"].get("SeriesInstanceUID", uid)
        if new_uid != uid:
            if new_uid in out:
                return f"Series {new_uid} already exists in the image set."
            out[new_uid] = out.pop(uid)
    owners = {sop for s in out.values() for sop in s["Instances"]}
    for series in out.values():
        instances = series["Instances"]
        for sop in list(instances):
            new_sop = instances[sop].get("DICOM", {}).get("SOPInstanceUID", sop)
            if new_sop != sop:
                if new_sop in owners:
                    return f"SOP Instance UID {new_sop} already exists in the image set."
                instances[new_sop] = instances.pop(sop)
                owners.add(new_sop)
    return None
