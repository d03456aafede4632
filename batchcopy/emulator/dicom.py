"""The DICOM content of one image-set version, and what a copy does to it.

A version's content is kept in the shape GetImageSetMetadata answers, minus the
three top-level identifiers:

    {"Patient": {"DICOM": {...}},
     "Study": {"DICOM": {...},
               "Series": {"<SeriesInstanceUID>": {
                   "DICOM": {...},
                   "Instances": {"<SOPInstanceUID>": {
                       "DICOM": {...}, "ImageFrames": [{"ID": ..., "FrameSizeInBytes": ...}]}}}}}}

Versions share structure: `clone` copies the Study / Series / Instances maps but
shares the instance documents and DICOM dicts, which nothing ever mutates.

Pure functions only (no clock, no state); errors are modelled ValidationExceptions.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchcopy.emulator.errors import ValidationException

Content = dict[str, Any]
# A copy request resolved against its source: series UID -> SOP Instance UIDs to copy.
Selection = dict[str, list[str]]
# A parsed copiableAttributes document: series UID -> SOP UIDs, or None for "whole series".
SubsetRequest = dict[str, list[str] | None]

SCHEMA_VERSION = "1.1"
_MAX_FRAME_BYTES = 16 * 1024 * 1024


def make_content(patient: dict[str, Any], study: dict[str, Any],
                 series: dict[str, Any] | None = None) -> Content:
    return {"Patient": {"DICOM": dict(patient)},
            "Study": {"DICOM": dict(study), "Series": dict(series or {})}}


def series_of(content: Content) -> dict[str, Any]:
    return content["Study"]["Series"]


def clone(content: Content) -> Content:
    """A copy whose maps can be changed without touching `content`."""
    return {
        "Patient": {"DICOM": content["Patient"]["DICOM"]},
        "Study": {
            "DICOM": content["Study"]["DICOM"],
            "Series": {uid: {"DICOM": s["DICOM"], "Instances": dict(s["Instances"])}
                       for uid, s in series_of(content).items()},
        },
    }


def skeleton(content: Content) -> Content:
    """Patient and Study of `content`, no series: a new image set before anything is copied."""
    return make_content(content["Patient"]["DICOM"], content["Study"]["DICOM"])


def instances_by_series(content: Content) -> dict[str, list[str]]:
    return {uid: sorted(s["Instances"]) for uid, s in sorted(series_of(content).items())}


def instance_count(content: Content) -> int:
    return sum(len(s["Instances"]) for s in series_of(content).values())


def frame_count(content: Content) -> int:
    return sum(len(inst.get("ImageFrames", ()))
               for s in series_of(content).values() for inst in s["Instances"].values())


# ----------------------------------------------------------------- copiableAttributes

def check_schema_version(doc: dict[str, Any], where: str, number_ok: bool) -> None:
    """An optional SchemaVersion must be "1.1" (or, with number_ok, the number 1.1)."""
    if "SchemaVersion" not in doc:
        return
    value = doc["SchemaVersion"]
    if value == SCHEMA_VERSION or (number_ok and isinstance(value, float) and value == 1.1):
        return
    accepted = f"{SCHEMA_VERSION!r} or 1.1" if number_ok else repr(SCHEMA_VERSION)
    raise ValidationException(f"{where} SchemaVersion {value!r} is not supported; use {accepted}")


def parse_copiable_attributes(text: str, max_chars: int, number_ok: bool = False) -> SubsetRequest:
    """Check the shape of a copiableAttributes string (no source needed).

    Accepted: {"SchemaVersion"?: "1.1", "Study": {"Series": {"<uid>": {"Instances"?:
    {"<sop>": {}}}}}}. A series without "Instances", or with an empty Instances
    object, selects the whole series (-> None). With number_ok SchemaVersion may be 1.1.
    """
    if len(text) > max_chars:
        raise ValidationException(
            f"copiableAttributes is {len(text)} characters long; the limit is {max_chars}")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValidationException(f"copiableAttributes is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValidationException("copiableAttributes must be a JSON object")
    _only_keys(doc, {"SchemaVersion", "Study"}, "copiableAttributes")
    check_schema_version(doc, "copiableAttributes", number_ok)
    study = doc.get("Study")
    if not isinstance(study, dict):
        raise ValidationException("copiableAttributes must contain a \"Study\" object")
    _only_keys(study, {"Series"}, "copiableAttributes Study")
    series = study.get("Series")
    if not isinstance(series, dict) or not series:
        raise ValidationException(
            "copiableAttributes Study must contain a non-empty \"Series\" object")
    request: SubsetRequest = {}
    for series_uid, entry in series.items():
        if not isinstance(entry, dict):
            raise ValidationException(f"copiableAttributes series {series_uid} must be an object")
        _only_keys(entry, {"Instances"}, f"copiableAttributes series {series_uid}")
        instances = entry.get("Instances")
        if instances is None:
            request[series_uid] = None
            continue
        if not isinstance(instances, dict):
            raise ValidationException(
                f"copiableAttributes Instances of series {series_uid} must be an object")
        for sop_uid, value in instances.items():
            if not isinstance(value, dict):
                raise ValidationException(
                    f"copiableAttributes instance {sop_uid} of series {series_uid} "
                    "must be an object")
        request[series_uid] = list(instances) or None
    return request


def _only_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValidationException(
            f"{where} has unknown keys {unknown}; allowed: {sorted(allowed)}")


def resolve_selection(request: SubsetRequest | None, source: Content) -> tuple[Selection, str | None]:
    """What a copy takes from `source`: everything (request None) or the named subset.

    The second item is None, or names the first series / SOP instance of the request that
    the source does not hold (what is missing is left out of the selection).
    """
    source_series = series_of(source)
    if request is None:
        return {uid: list(s["Instances"]) for uid, s in source_series.items()}, None
    selection: Selection = {}
    missing: list[str] = []
    for series_uid, sops in request.items():
        if series_uid not in source_series:
            missing.append(f"Series {series_uid} does not exist in the source image set")
            continue
        present = source_series[series_uid]["Instances"]
        if sops is None:
            selection[series_uid] = list(present)
            continue
        absent = [sop for sop in sops if sop not in present]
        missing += [f"SOP instance {sop} does not exist in series {series_uid} of the source image set"
                    for sop in absent]
        kept = [sop for sop in sops if sop in present]
        if kept:
            selection[series_uid] = kept
    return selection, (missing[0] if missing else None)


def selected_instances(selection: Selection) -> int:
    return sum(len(sops) for sops in selection.values())


def selected_frames(source: Content, selection: Selection) -> int:
    src = series_of(source)
    return sum(len(src[uid]["Instances"][sop].get("ImageFrames", ()))
               for uid, sops in selection.items() for sop in sops)


# ----------------------------------------------------------------- the copy itself

def merge(base: Content, source: Content, selection: Selection, force: bool,
          series_bound: bool = False, duplicates_fail: bool = False) -> tuple[Content, str | None]:
    """Content after copying `selection` of `source` into `base`.

    Returns (content, None) on success, or (clone of base, reason) when the copy must
    end COPY_FAILED (the model prefixes the reason with INVALID_REQUEST):
    Patient/Study/Series attributes disagree (unless force), or a copied SOP Instance
    UID already lives under another series of `base`. With force the base keeps its own
    Patient/Study/Series attributes. A copied instance whose SOP UID already exists in
    the same series replaces it, unless `duplicates_fail`: then any SOP UID the base
    already holds fails the copy.

    `series_bound` (image sets are series, and `base` is a primary one): a series of the
    source that `base` does not hold disagrees at the Series level; with force its
    instances join the series `base` holds (its first, should it hold several).
    """
    base_series = series_of(base)
    if not force:
        level = mismatch_level(base, source, selection)
        if level is None and series_bound and base_series and set(selection) - set(base_series):
            level = "Series"
        if level is not None:
            return clone(base), f"{level} of SourceImageSet and DestinationImageSet don't match."
    home = next(iter(base_series), None) if series_bound else None
    placements = [(uid if home is None or uid in base_series else home, uid, sop)
                  for uid, sops in selection.items() for sop in sops]
    owner = {sop: uid for uid, s in base_series.items() for sop in s["Instances"]}
    for dest_uid, _, sop in placements:
        other = owner.get(sop)
        if other is not None and other != dest_uid:
            return clone(base), (f"SOP Instance UID {sop} already exists "
                                 f"in another Series of DestinationImageSet: {other}.")
        if other is not None and duplicates_fail:
            return clone(base), f"SOP Instance UID {sop} already exists in DestinationImageSet."
    result = clone(base)
    out_series = series_of(result)
    src_series = series_of(source)
    for dest_uid, src_uid, sop in placements:
        target = out_series.get(dest_uid)
        if target is None:
            target = {"DICOM": src_series[src_uid]["DICOM"], "Instances": {}}
            out_series[dest_uid] = target
        target["Instances"][sop] = src_series[src_uid]["Instances"][sop]
    return result, None


def mismatch_level(base: Content, source: Content, selection: Selection) -> str | None:
    """'Patient', 'Study' or 'Series' when that level's attributes disagree, else None.

    An empty level in `base` (nothing known yet) agrees with anything.
    """
    for level in ("Patient", "Study"):
        mine, theirs = base[level]["DICOM"], source[level]["DICOM"]
        if mine and mine != theirs:
            return level
    base_series, src_series = series_of(base), series_of(source)
    for series_uid in selection:
        if series_uid in base_series and \
                base_series[series_uid]["DICOM"] != src_series[series_uid]["DICOM"]:
            return "Series"
    return None


# ----------------------------------------------------------------- documents

def metadata_document(datastore_id: str, image_set_id: str, content: Content) -> dict[str, Any]:
    return {"SchemaVersion": SCHEMA_VERSION, "DatastoreID": datastore_id,
            "ImageSetID": image_set_id, "Patient": content["Patient"], "Study": content["Study"]}


def gzip_json(document: dict[str, Any]) -> bytes:
    raw = json.dumps(document, separators=(",", ":"), sort_keys=False).encode("utf-8")
    return gzip.compress(raw, mtime=0)


def dicom_tags(content: Content) -> dict[str, Any]:
    """SearchImageSets' DICOMTags. Series tags only when the image set holds one series."""
    patient, study = content["Patient"]["DICOM"], content["Study"]["DICOM"]
    tags: dict[str, Any] = {}
    for tag, value in (("DICOMPatientId", patient.get("PatientID")),
                       ("DICOMPatientName", patient.get("PatientName")),
                       ("DICOMPatientBirthDate", patient.get("PatientBirthDate")),
                       ("DICOMPatientSex", patient.get("PatientSex")),
                       ("DICOMStudyInstanceUID", study.get("StudyInstanceUID")),
                       ("DICOMStudyId", study.get("StudyID")),
                       ("DICOMStudyDescription", study.get("StudyDescription")),
                       ("DICOMAccessionNumber", study.get("AccessionNumber")),
                       ("DICOMStudyDate", study.get("StudyDate")),
                       ("DICOMStudyTime", study.get("StudyTime"))):
        if value is not None:
            tags[tag] = value
    series = series_of(content)
    tags["DICOMNumberOfStudyRelatedSeries"] = len(series)
    tags["DICOMNumberOfStudyRelatedInstances"] = instance_count(content)
    if len(series) == 1:
        (uid, only), = series.items()
        d = only["DICOM"]
        tags["DICOMSeriesInstanceUID"] = uid
        for tag, key in (("DICOMSeriesModality", "Modality"),
                         ("DICOMSeriesBodyPart", "BodyPartExamined")):
            if d.get(key) is not None:
                tags[tag] = d[key]
        if isinstance(d.get("SeriesNumber"), int):
            tags["DICOMSeriesNumber"] = d["SeriesNumber"]
    return tags


def study_datetime_key(date: str | None, time: str | None) -> tuple[str, float]:
    """Orderable (date, time) for StudyDate / StudyTime (DICOM DA / TM strings)."""
    t = (time or "").strip()
    whole, _, frac = t.partition(".")
    whole = (whole.replace(":", "") + "000000")[:6]
    try:
        seconds = float(f"{whole}.{frac or '0'}")
    except ValueError:
        seconds = 0.0
    return (date or "").strip(), seconds


# ----------------------------------------------------------------- SearchImageSets

@dataclass(frozen=True)
class SearchRow:
    """What SearchImageSets sees of one image set (its latest version)."""

    image_set_id: str
    created_at: float
    updated_at: float
    is_primary: bool
    version: int
    content: Content


_RANGE_ATTRIBUTES = ("createdAt", "updatedAt", "DICOMStudyDateAndTime")
_SEARCH_ATTRIBUTES = frozenset({"DICOMPatientId", "DICOMAccessionNumber", "DICOMStudyId",
                                "DICOMStudyInstanceUID", "DICOMSeriesInstanceUID", "createdAt",
                                "updatedAt", "DICOMStudyDateAndTime", "isPrimary"})


_DOCUMENTED_PAIR = {("DICOMSeriesInstanceUID", "EQUAL"), ("updatedAt", "BETWEEN")}


def check_filter_pair(filters: list[dict[str, Any]], reading: str) -> None:
    """`search_filter_pairs=documented`: two filters only as search-image-sets.rst
    example 4 combines them (ValidationException otherwise)."""
    if reading == "any" or len(filters) < 2:
        return
    pair = {(next(iter(f["values"][0]), None) if f.get("values") else None, f.get("operator"))
            for f in filters}
    if pair != _DOCUMENTED_PAIR:
        shown = " and ".join(f"{op} {attr}" for attr, op in sorted(pair, key=str))
        raise ValidationException(f"Unsupported combination of search filters: {shown}")


def search_predicate(search_filter: dict[str, Any], *,
                     upper_exclusive: bool = False) -> Callable[[SearchRow], bool]:
    """One SearchFilter ({"values": [...], "operator": "EQUAL" | "BETWEEN"}) as a test;
    `upper_exclusive`: a BETWEEN leaves its upper bound out (search_between_upper)."""
    values, operator = search_filter["values"], search_filter["operator"]
    keys = []
    for value in values:
        if not isinstance(value, dict) or len(value) != 1:
            raise ValidationException("Each search filter value must set exactly one attribute")
        keys.append(next(iter(value)))
    attr = keys[0]
    if attr not in _SEARCH_ATTRIBUTES:
        raise ValidationException(f"Unknown search attribute {attr}")
    if operator == "EQUAL":
        if len(values) != 1:
            raise ValidationException("The EQUAL operator takes exactly one value")
        wanted = values[0][attr]
        return lambda row: _attribute_equals(row, attr, wanted)
    if operator == "BETWEEN":
        if len(values) != 2 or keys[0] != keys[1]:
            raise ValidationException(
                "The BETWEEN operator takes exactly two values of the same attribute")
        if attr not in _RANGE_ATTRIBUTES:
            raise ValidationException(
                f"The BETWEEN operator does not apply to {attr}; use createdAt, "
                "updatedAt or DICOMStudyDateAndTime")
        low, high = (_comparable(attr, v[attr]) for v in values)
        if upper_exclusive:
            return lambda row: low <= _comparable(attr, _attribute_of(row, attr)) < high
        return lambda row: low <= _comparable(attr, _attribute_of(row, attr)) <= high
    raise ValidationException(f"Unknown search operator {operator}")


def search_sort_key(sort_field: str) -> Callable[[SearchRow], tuple[Any, ...]]:
    if sort_field == "DICOMStudyDateAndTime":
        def by_study(row: SearchRow) -> tuple[Any, ...]:
            study = row.content["Study"]["DICOM"]
            return study_datetime_key(study.get("StudyDate"), study.get("StudyTime")), row.image_set_id
        return by_study
    if sort_field == "createdAt":
        return lambda row: (row.created_at, row.image_set_id)
    return lambda row: (row.updated_at, row.image_set_id)


def _attribute_of(row: SearchRow, attr: str) -> Any:
    patient, study = row.content["Patient"]["DICOM"], row.content["Study"]["DICOM"]
    if attr == "createdAt":
        return row.created_at
    if attr == "updatedAt":
        return row.updated_at
    if attr == "isPrimary":
        return row.is_primary
    if attr == "DICOMStudyDateAndTime":
        return {"DICOMStudyDate": study.get("StudyDate"), "DICOMStudyTime": study.get("StudyTime")}
    if attr == "DICOMPatientId":
        return patient.get("PatientID")
    if attr == "DICOMStudyInstanceUID":
        return study.get("StudyInstanceUID")
    if attr == "DICOMAccessionNumber":
        return study.get("AccessionNumber")
    if attr == "DICOMStudyId":
        return study.get("StudyID")
    if attr == "DICOMSeriesInstanceUID":
        return set(series_of(row.content))
    raise ValidationException(f"Unknown search attribute {attr}")


def _comparable(attr: str, value: Any) -> Any:
    if attr == "DICOMStudyDateAndTime":
        value = value or {}
        return study_datetime_key(value.get("DICOMStudyDate"), value.get("DICOMStudyTime"))
    return float(value)


def _attribute_equals(row: SearchRow, attr: str, wanted: Any) -> bool:
    actual = _attribute_of(row, attr)
    if attr == "DICOMSeriesInstanceUID":
        return wanted in actual
    if attr in ("createdAt", "updatedAt"):
        return abs(float(actual) - float(wanted)) < 0.0005
    if attr == "DICOMStudyDateAndTime":
        date_ok = actual.get("DICOMStudyDate") == wanted.get("DICOMStudyDate")
        if wanted.get("DICOMStudyTime") in (None, ""):
            return date_ok
        return date_ok and _comparable(attr, actual) == _comparable(attr, wanted)
    return bool(actual == wanted)


# ----------------------------------------------------------------- frames

def find_frame(content: Content, frame_id: str) -> dict[str, Any] | None:
    for s in series_of(content).values():
        for inst in s["Instances"].values():
            for frame in inst.get("ImageFrames", ()):
                if frame.get("ID") == frame_id:
                    return frame
    return None


def frame_bytes(frame_id: str, size: int) -> bytes:
    """Deterministic synthetic pixel data for a frame id."""
    size = max(0, min(int(size), _MAX_FRAME_BYTES))
    block = hashlib.sha256(frame_id.encode("utf-8")).digest()
    return (block * (size // len(block) + 1))[:size]
