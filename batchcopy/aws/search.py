"""SearchImageSets filters a client can check itself, for when the service refuses a pair.

A search takes at most two filters, and which pairs the service accepts is not documented
(search-image-sets.rst shows one: EQUAL DICOMSeriesInstanceUID with BETWEEN updatedAt;
the emulator's `search_filter_pairs` switch). When a pair is refused, `split` keeps one
filter for the service and `matches` applies the other to each summary it answers,
from the summary's own fields (DICOMTags, createdAt, updatedAt, isPrimary). The filter the
service keeps is the one a summary cannot answer for (DICOMSeriesInstanceUID: the tags
name a series only for some image sets), else the first EQUAL (the narrower search).
A BETWEEN checked here includes both bounds, as the caller meant them.

Pure: no I/O. Timestamps may be datetimes, epoch seconds or ISO-8601 text.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

Filter = dict[str, Any]
_TAGS = {"DICOMPatientId", "DICOMAccessionNumber", "DICOMStudyId", "DICOMStudyInstanceUID"}
_TIMES = {"createdAt", "updatedAt"}


def attribute(search_filter: Filter) -> str:
    """The attribute a filter is about (its values are tagged unions of one key)."""
    values = search_filter.get("values") or [{}]
    return next(iter(values[0]), "")


def checkable(search_filter: Filter) -> bool:
    """Whether `matches` can decide this filter from a summary."""
    attr = attribute(search_filter)
    return attr in _TAGS or attr in _TIMES or attr in ("DICOMStudyDateAndTime", "isPrimary")


def split(filters: list[Filter]) -> tuple[list[Filter], list[Filter]]:
    """(the one filter to send, the filters to check on each answer)."""
    if len(filters) < 2:
        return list(filters), []
    keep = next((f for f in filters if not checkable(f)), None)
    keep = keep or next((f for f in filters if f.get("operator") == "EQUAL"), filters[0])
    return [keep], [f for f in filters if f is not keep]


def epoch(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, str):
        return epoch(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return float(value)


def study_key(value: dict[str, Any] | None) -> tuple[str, float]:
    """(date, seconds) of a DICOMStudyDateAndTime value or of DICOMTags (DICOMStudyDate,
    DICOMStudyTime); a time left out is 00:00, as search-image-sets.rst example 2 says."""
    value = value or {}
    whole, _, frac = str(value.get("DICOMStudyTime") or "").strip().partition(".")
    whole = (whole.replace(":", "") + "000000")[:6]
    try:
        seconds = int(whole[:2]) * 3600 + int(whole[2:4]) * 60 + float(f"{whole[4:6]}.{frac or 0}")
    except ValueError:
        seconds = 0.0
    return str(value.get("DICOMStudyDate") or "").strip(), seconds


def _value(summary: dict[str, Any], attr: str) -> Any:
    if attr in _TIMES:
        return epoch(summary[attr]) if summary.get(attr) is not None else None
    if attr == "isPrimary":
        return summary.get("isPrimary")
    tags = summary.get("DICOMTags") or {}
    if attr == "DICOMStudyDateAndTime":
        return study_key(tags) if tags.get("DICOMStudyDate") else None
    return tags.get(attr)


def _wanted(attr: str, value: Any) -> Any:
    if attr in _TIMES:
        return epoch(value)
    if attr == "DICOMStudyDateAndTime":
        return study_key(value)
    return value


def matches(summary: dict[str, Any], search_filter: Filter) -> bool:
    """Whether one summary of SearchImageSets passes `search_filter` (a checkable one)."""
    attr = attribute(search_filter)
    got = _value(summary, attr)
    if got is None:
        return False
    values = [_wanted(attr, v[attr]) for v in search_filter["values"]]
    if search_filter.get("operator") == "BETWEEN":
        return bool(values[0] <= got <= values[1])
    if attr in _TIMES:
        return abs(got - values[0]) < 0.0005
    if attr == "DICOMStudyDateAndTime":
        wanted_time = search_filter["values"][0][attr].get("DICOMStudyTime")
        return got[0] == values[0][0] and (not wanted_time or got[1] == values[0][1])
    return bool(got == values[0])
