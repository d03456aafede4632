"""The `--where` conditions of `batchcopy select`, parsed into a Query that makes the
SearchImageSets criteria (what the service can narrow) and checks each study and series.

    NAME OP VALUE     e.g. Modality=CT  'StudyDate>=20190101'  SeriesDescription~*chest*

Study level (SearchImageSets and its summaries): PatientID, StudyInstanceUID,
AccessionNumber, StudyID, StudyDate (YYYYMMDD; a range as DICOM writes it,
20190101-20191231), UpdatedAt and CreatedAt (ISO 8601), IsPrimary (true/false).
Series level (each series of GetImageSetMetadata): Modality, BodyPartExamined,
SeriesDescription, SeriesInstanceUID. `=` takes a comma-separated list (any of them) or
@FILE (one value a line); `!=` none of them; `~` shell patterns (`*`, `?`), case ignored;
`<` `<=` `>` `>=` for dates and times. Conditions are ANDed. Text compares as the service
stores it, except Modality, BodyPartExamined and SeriesDescription, whose case is ignored.

The service takes two filters at most (one EQUAL, one BETWEEN here): `criteria` sends the
narrowest (a UID or id list as one search per value) and `study_matches` checks every
study condition on each summary anyway, so what the service does with bounds (inclusive or
not, `search_between_upper`) or with a pair it refuses changes nothing. Pure: no I/O
(but @FILE, read when parsing).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

from batchcopy.aws.search import epoch, study_key


class WhereError(ValueError):
    """A condition that cannot be read: the message names it and what is accepted."""


@dataclass(frozen=True)
class Field:
    name: str  # as the user writes it (DICOM keyword)
    level: str  # study | series
    kind: str  # text | uid | date | time | bool
    tag: str = ""  # SearchImageSets: the filter attribute / the DICOMTags key
    fold: bool = False  # compare without case


FIELDS: tuple[Field, ...] = (
    Field("PatientID", "study", "text", "DICOMPatientId"),
    Field("StudyInstanceUID", "study", "uid", "DICOMStudyInstanceUID"),
    Field("AccessionNumber", "study", "text", "DICOMAccessionNumber"),
    Field("StudyID", "study", "text", "DICOMStudyId"),
    Field("StudyDate", "study", "date", "DICOMStudyDate"),
    Field("UpdatedAt", "study", "time", "updatedAt"),
    Field("CreatedAt", "study", "time", "createdAt"),
    Field("IsPrimary", "study", "bool", "isPrimary"),
    Field("Modality", "series", "text", fold=True),
    Field("BodyPartExamined", "series", "text", fold=True),
    Field("SeriesDescription", "series", "text", fold=True),
    Field("SeriesInstanceUID", "series", "uid", "DICOMSeriesInstanceUID"),
)
_ALIASES = {"patient": "PatientID", "accession": "AccessionNumber", "studyuid": "StudyInstanceUID",
            "seriesuid": "SeriesInstanceUID", "bodypart": "BodyPartExamined",
            "description": "SeriesDescription", "primary": "IsPrimary"}
BY_NAME = {f.name.lower(): f for f in FIELDS} | {k: f for k, n in _ALIASES.items()
                                                 for f in FIELDS if f.name == n}
# the EQUAL a search is narrowed by, first found first: a study UID is one image set or a few
_NARROWING = ("StudyInstanceUID", "AccessionNumber", "PatientID", "StudyID", "SeriesInstanceUID",
              "IsPrimary")
_SYNTAX = re.compile(r"^\s*([A-Za-z_]+)\s*(>=|<=|!=|=|>|<|~)\s*(.*?)\s*$", re.S)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
FAR_PAST, FAR_FUTURE = "00010101", "99991231"


@dataclass(frozen=True)
class Condition:
    field: Field
    op: str  # = != ~ < <= > >=
    values: tuple[Any, ...]  # text, or a date string, an epoch float, a bool
    text: str  # as given, for messages


@dataclass(frozen=True)
class Query:
    conditions: tuple[Condition, ...] = ()

    @property
    def study(self) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if c.field.level == "study")

    @property
    def series(self) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if c.field.level == "series")

    def describe(self) -> str:
        return " and ".join(c.text for c in self.conditions) or "every image set"


# ---------------------------------------------------------------- parsing
def parse(expressions: Iterable[str], *, base: Path | None = None) -> Query:
    """The --where expressions as a Query; WhereError names the first that cannot be read."""
    return Query(tuple(parse_one(text, base=base) for text in expressions))


def parse_one(text: str, *, base: Path | None = None) -> Condition:
    found = _SYNTAX.match(text)
    if not found:
        raise WhereError(f"--where {text!r}: expected NAME OP VALUE, e.g. Modality=CT or "
                         "'StudyDate>=20190101'")
    name, op, raw = found.groups()
    spec = BY_NAME.get(name.lower())
    if spec is None:
        import difflib

        guess = difflib.get_close_matches(name.lower(), list(BY_NAME), n=1, cutoff=0.7)
        hint = f"did you mean {BY_NAME[guess[0]].name}? " if guess else ""
        raise WhereError(f"--where {text!r}: unknown name {name!r}; {hint}names: "
                         f"{', '.join(f.name for f in FIELDS)}")
    if not raw:
        raise WhereError(f"--where {text!r}: no value after {op}")
    where = f"--where {text!r}"
    if op in ("<", "<=", ">", ">=") and spec.kind not in ("date", "time"):
        raise WhereError(f"{where}: {op} compares dates and times; {spec.name} takes = != ~")
    if op == "~" and spec.kind not in ("text", "uid"):
        raise WhereError(f"{where}: ~ matches text patterns; {spec.name} takes = != < <= > >=")
    items = _values(raw, base, where)
    values = tuple(_value(spec, op, item, where) for item in items)
    return Condition(spec, op, values, f"{spec.name}{op}{raw}")


def _values(raw: str, base: Path | None, where: str) -> list[str]:
    if raw.startswith("@"):
        path = Path(raw[1:]).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except OSError as exc:
            raise WhereError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
        items = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not items:
            raise WhereError(f"{where}: {path} lists no value")
        return items
    return [item.strip() for item in raw.split(",") if item.strip()]


def _value(spec: Field, op: str, item: str, where: str) -> Any:
    if spec.kind == "uid" and op != "~" and not _UID.match(item):
        raise WhereError(f"{where}: {item!r} is not a DICOM UID (digits and dots)")
    if spec.kind == "bool":
        low = item.lower()
        if low not in ("true", "false", "yes", "no", "1", "0"):
            raise WhereError(f"{where}: {item!r}: expected true or false")
        return low in ("true", "yes", "1")
    if spec.kind == "date":
        return _date_value(op, item, where)
    if spec.kind == "time":
        return _time(item, where)
    return item


def _date_value(op: str, item: str, where: str) -> str | tuple[str, str]:
    """A date, or (with = or !=) a DICOM range: 20190101-20191231, 20190101-, -20191231."""
    if re.fullmatch(r"\d{4}-\d\d-\d\d", item) or "-" not in item:
        return _date(item, where)
    low, _, high = item.partition("-")
    if op not in ("=", "!=") or "-" in high:
        raise WhereError(f"{where}: {item!r}: a range is written StudyDate=20190101-20191231 "
                         "(either end may be left out)")
    return (_date(low, where) if low else FAR_PAST, _date(high, where) if high else FAR_FUTURE)


def _date(item: str, where: str) -> str:
    digits = item.replace("-", "").replace(".", "")
    try:
        datetime.strptime(digits, "%Y%m%d")
    except ValueError:
        raise WhereError(f"{where}: {item!r} is not a date (YYYYMMDD, or a range "
                         "20190101-20191231)") from None
    return digits


def _time(item: str, where: str) -> float:
    try:
        parsed = datetime.fromisoformat(item.replace("Z", "+00:00"))
    except ValueError:
        raise WhereError(f"{where}: {item!r} is not an ISO 8601 date or time "
                         "(2024-03-01 or 2024-03-01T12:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


# ---------------------------------------------------------------- ranges
def _span(c: Condition) -> tuple[Any, Any]:
    """The (low, high) a comparison or = condition allows (its values ORed for =, ANDed
    for comparisons); dates as YYYYMMDD (FAR_PAST / FAR_FUTURE when open), times in epoch
    seconds (None when open; a midnight = means that whole day)."""
    dates = c.field.kind == "date"
    lows: list[Any] = []
    highs: list[Any] = []
    for v in c.values:
        if c.op == "=":
            lo, hi = v if isinstance(v, tuple) else (v, v)
            if not dates and _is_midnight(v):
                hi = v + 86_400
            lows.append(lo)
            highs.append(hi)
        elif c.op in (">", ">="):
            lows.append(_shift(v, 1) if dates and c.op == ">" else v)
        else:
            highs.append(_shift(v, -1) if dates and c.op == "<" else v)
    if c.op == "=":
        return min(lows), max(highs)
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _shift(day: str, days: int) -> str:
    return (datetime.strptime(day, "%Y%m%d").date() + timedelta(days=days)).strftime("%Y%m%d")


def bounds(query: Query, name: str) -> tuple[Any, Any] | None:
    """The intersection of the spans of `name`'s conditions (None: no condition on it)."""
    spans = [_span(c) for c in query.study if c.field.name == name and c.op != "!="]
    if not spans:
        return None
    lows = [lo for lo, _ in spans if lo is not None]
    highs = [hi for _, hi in spans if hi is not None]
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _is_midnight(stamp: float) -> bool:
    return datetime.fromtimestamp(stamp, timezone.utc).time() == time(0)


# ---------------------------------------------------------------- SearchImageSets
def criteria(query: Query, now: float) -> list[dict[str, Any]]:
    """The searches to make (each a searchCriteria), at most one EQUAL and one BETWEEN each;
    several when the narrowing condition lists several values. Sorted by createdAt
    ascending: pages of a data store that changes meanwhile stay in place."""
    sort = {"sortField": "createdAt", "sortOrder": "ASC"}
    between = _between(query, now)
    narrow = next((c for name in _NARROWING for c in query.conditions
                   if c.field.name == name and c.op == "=" and c.field.tag), None)
    if narrow is None:
        return [{"filters": [between], "sort": sort} if between else {"sort": sort}]
    out = []
    for value in dict.fromkeys(narrow.values):
        equal = {"operator": "EQUAL", "values": [{narrow.field.tag: value}]}
        out.append({"filters": [equal, between] if between else [equal], "sort": sort})
    return out


def _between(query: Query, now: float) -> dict[str, Any] | None:
    dates = bounds(query, "StudyDate")
    if dates is not None:
        low, high = dates
        return {"operator": "BETWEEN", "values": [
            {"DICOMStudyDateAndTime": {"DICOMStudyDate": low or FAR_PAST, "DICOMStudyTime": "000000"}},
            {"DICOMStudyDateAndTime": {"DICOMStudyDate": high or FAR_FUTURE,
                                       "DICOMStudyTime": "235959.999999"}}]}
    for name, tag in (("UpdatedAt", "updatedAt"), ("CreatedAt", "createdAt")):
        found = bounds(query, name)
        if found is not None:  # a second either side: the summary's check decides
            low, high = found
            lo = datetime.fromtimestamp(max(0.0, (low or 0.0) - 1), timezone.utc)
            hi = datetime.fromtimestamp((high if high is not None else now + 86_400) + 1, timezone.utc)
            return {"operator": "BETWEEN", "values": [{tag: lo}, {tag: hi}]}
    return None


# ---------------------------------------------------------------- checking
def study_matches(summary: dict[str, Any], query: Query) -> bool:
    """Every study condition, on one SearchImageSets summary."""
    tags = summary.get("DICOMTags") or {}
    for c in query.study:
        name = c.field.name
        if name == "StudyDate":
            got: Any = tags.get("DICOMStudyDate")
        elif name in ("UpdatedAt", "CreatedAt"):
            stamp = summary.get(c.field.tag)
            got = None if stamp is None else epoch(stamp)
        elif name == "IsPrimary":
            got = summary.get("isPrimary")
        else:
            got = tags.get(c.field.tag)
        if not _holds(c, got):
            return False
    return True


def series_matches(series: dict[str, Any], query: Query) -> bool:
    """Every series condition, on one series' DICOM attributes (its metadata)."""
    return all(_holds(c, series.get(c.field.name)) for c in query.series)


def _holds(c: Condition, got: Any) -> bool:
    if got is None or got == "":
        return c.op == "!="
    if c.field.kind == "date":
        got = study_key({"DICOMStudyDate": got})[0]
    if c.op in ("<", "<=", ">", ">="):
        return all(_compare(got, c.op, v) for v in c.values)
    if c.field.kind == "date" and c.op in ("=", "!="):
        hit = any(v[0] <= got <= v[1] if isinstance(v, tuple) else got == v for v in c.values)
    elif c.field.kind == "time":
        hit = any(v <= got < v + 86_400 if _is_midnight(v) else abs(got - v) < 0.0005
                  for v in c.values)
    elif c.op == "~":
        hit = any(fnmatch.fnmatchcase(str(got).lower(), v.lower()) for v in c.values)
    elif c.field.fold:
        hit = str(got).strip().lower() in {str(v).lower() for v in c.values}
    else:
        hit = got in c.values
    return hit if c.op != "!=" else not hit


def _compare(got: Any, op: str, value: Any) -> bool:
    return {"<": got < value, "<=": got <= value, ">": got > value, ">=": got >= value}[op]

