"""Manifest rules: one row's cells -> a CopySpec, and the checks that span rows.

Nothing here knows about files: `convert_row` takes the cells of one row (already
read by manifest/scan.py) and returns a CopySpec or the row's problems as
`(column, message)` pairs; `CrossRowChecker` sees every valid row once and reports
`CrossRowProblem`s. manifest/scan.py turns both into ManifestErrors with path and line.

copiableAttributes, as this project reads it (no JSON schema is published):
``{"SchemaVersion": "1.1", "Study": {"Series": {"<SeriesUID>": {"Instances":
{"<SOPUID>": {}}}}}}``. SchemaVersion is optional on input ("1.1" if given); at least
one series; a series with no or empty "Instances" means the whole series. UIDs are
digits and dots, at most 64 characters. The canonical form, which every CopySpec
carries and every merge produces, is compact JSON with sorted keys, always with
``"SchemaVersion":"1.1"``, and a whole series written as ``{"Instances":{}}``.

Memory in the cross-row pass is per pinned or written image set (small dicts and a
set keyed by a 64-bit hash) plus packed arrays of 8-byte hashes (each row's id and
content, each image set a row touches) and row and line numbers, sorted or counted
once at the end; no per-row Python objects survive a batch. The price: a
64-bit hash collision (odds about 1 in 10^7 for a million rows) could report a
false duplicate.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from batchcopy.core.specs import CopySpec

# Limits of the API, read by hand from botocore's model of medical-imaging 2023-07-19
# (service-2.json); the runner must not load the model at start-up.
ID_RE = re.compile(r"[0-9a-z]{32}")  # shapes DatastoreId, ImageSetId: pattern [0-9a-z]{32}
# Shape ImageSetExternalVersionId (latestVersionId, versionId): pattern \d+, no length.
# SearchImageSets reports the same version as shape Integer (ImageSetsMetadataSummary.version,
# a 32-bit int), so a version id above 2^31-1 cannot name an existing version.
VERSION_RE = re.compile(r"[0-9]{1,10}")  # [0-9], not \d: Python's \d takes any Unicode digit
VERSION_MAX = 2**31 - 1
UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
UID_MAX = 64
MAX_ATTRIBUTES_CHARS = 260_000  # shape CopiableAttributes: string, min 1, max 260000
MAX_ROW_ID_CHARS = 256
# The valid copiableAttributes shape nests 6 objects deep (top, Study, Series, a series,
# Instances, an instance); anything much deeper is refused before json.loads, whose
# recursion a deep enough document would exhaust.
MAX_JSON_DEPTH = 16
SCHEMA_VERSION = "1.1"

TEXT_COLUMNS = (
    "row_id",
    "datastore_id",
    "source_image_set_id",
    "source_version_id",
    "destination_image_set_id",
    "destination_version_id",
    "copiable_attributes",
    "series_instance_uid",
    "sop_instance_uid",
)
BOOL_COLUMNS = ("force", "promote_to_primary")
_COLUMN_ORDER = {c: i for i, c in enumerate(TEXT_COLUMNS + BOOL_COLUMNS)}
# Columns whose cells may span lines (JSON whitespace); in every other known column a line
# break is an error (in a row_id it would break every line-based tool; elsewhere it is
# usually the trace of a quote that was never closed). Unknown columns may span lines too.
MULTILINE_COLUMNS = frozenset({"copiable_attributes"})
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # C0 controls but tab, LF, CR
_LINE_BREAK_RE = re.compile(r"[\r\n]")
_CONTROL_NAMES = {0x00: " (NUL)", 0x0A: " (LF)", 0x0D: " (CR)", 0x1B: " (ESC)"}
_INT_OK = frozenset({"row_id", "source_version_id", "destination_version_id"})
_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n", ""})

Problem = tuple[str | None, str]  # (column, message)


class RuleError(ValueError):
    """One rule broken by one value; the message is meant for the user."""


def show(value: object, limit: int = 60) -> str:
    """repr() of a bad value, truncated so an error line stays readable."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[: limit - 3]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit + 2 else text[:limit] + "..."


# ---------------------------------------------------------------- cells


def text_cell(column: str, value: Any) -> str:
    """A cell as stripped text ("" = absent). Parquet may type some columns."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value != value:  # NaN
        return ""
    if column in _INT_OK and not isinstance(value, bool):
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
    raise RuleError(f"expected text, got {type(value).__name__} {show(value)}")


def bool_cell(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, float):
        if value != value:
            return False
        if value in (0.0, 1.0):
            return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise RuleError(f"not a boolean (expected true/false, 1/0, yes/no, y/n or empty): {show(value)}")


def check_id(value: str, what: str) -> str:
    if not ID_RE.fullmatch(value):
        raise RuleError(f"not {what} id (expected 32 characters [0-9a-z]): {show(value)}")
    return value


def check_version(value: str) -> str:
    if not VERSION_RE.fullmatch(value) or int(value) > VERSION_MAX:
        raise RuleError(f"not a version id (expected decimal digits, at most {VERSION_MAX}, e.g. '1'): "
                        f"{show(value)}")
    return value


def control_problems(cells: Mapping[str, Any]) -> list[Problem]:
    """Control characters in text cells: any C0 control but tab, and line breaks outside
    MULTILINE_COLUMNS and unknown columns. Read from the raw cell (before stripping)."""
    out: list[Problem] = []
    for col, value in cells.items():
        if not isinstance(value, str):
            continue
        bad = _CONTROL_RE.search(value)
        if bad is None and col in _COLUMN_ORDER and col not in MULTILINE_COLUMNS:
            bad = _LINE_BREAK_RE.search(value)
        if bad is not None:
            code = ord(bad.group())
            what = "line break" if bad.group() in "\r\n" else "control character"
            out.append((col, f"{what} U+{code:04X}{_CONTROL_NAMES.get(code, '')} at character "
                             f"{bad.start() + 1}: {show(value)}"))
    return out


def check_uid(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > UID_MAX or not UID_RE.fullmatch(value):
        raise RuleError(f"not a DICOM {what} UID (digits and dots, at most {UID_MAX} characters): {show(value)}")
    return value


# ---------------------------------------------------------------- copiableAttributes

SeriesMap = dict[str, "set[str] | None"]  # series UID -> instance UIDs, None = whole series


def canonical_attributes(series: Mapping[str, Iterable[str] | None]) -> str:
    """The canonical copiableAttributes string for a series -> instances map."""
    body = {uid: {"Instances": {sop: {} for sop in (insts or ())}} for uid, insts in series.items()}
    doc = {"SchemaVersion": SCHEMA_VERSION, "Study": {"Series": body}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def series_map(attrs: str) -> SeriesMap:
    """Parse a canonical (or any valid) copiableAttributes string into a SeriesMap."""
    doc = json.loads(attrs)
    out: SeriesMap = {}
    for uid, body in doc["Study"]["Series"].items():
        insts = (body or {}).get("Instances") or {}
        out[uid] = set(insts) if insts else None
    return out


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise RuleError(f"duplicate key {show(key)} in the JSON")
        out[key] = value
    return out


def _only_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = [k for k in obj if k not in allowed]
    if extra:
        raise RuleError(f"{where}: unexpected key {show(extra[0])} (expected {', '.join(allowed)})")


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether brackets outside JSON strings nest deeper than `limit` (cheap: no parsing)."""
    if text.count("{") + text.count("[") <= limit:
        return False
    depth = 0
    for token in _JSON_TOKEN_RE.finditer(text):
        ch = token.group()
        if ch in "{[":
            depth += 1
            if depth > limit:
                return True
        elif ch in "}]":
            depth -= 1
    return False


_JSON_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def parse_copiable_attributes(text: str) -> str:
    """Validate a copiableAttributes JSON string; return its canonical form."""
    if json_depth_exceeds(text):
        raise RuleError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels (a valid copiableAttributes "
                        f"is 6 deep): {show(text)}")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise RuleError(f"not valid JSON ({exc.msg} at character {exc.pos}): {show(text)}") from None
    if not isinstance(doc, dict):
        raise RuleError(f'must be a JSON object like {{"Study": {{"Series": {{...}}}}}}: {show(text)}')
    _only_keys(doc, ("SchemaVersion", "Study"), "top level")
    if "SchemaVersion" in doc and doc["SchemaVersion"] != SCHEMA_VERSION:
        raise RuleError(f"SchemaVersion must be {SCHEMA_VERSION!r}, got {show(doc['SchemaVersion'])}")
    study = doc.get("Study")
    if not isinstance(study, dict) or not isinstance(study.get("Series"), dict):
        raise RuleError('needs "Study": {"Series": {...}} naming the series to copy')
    _only_keys(study, ("Series",), "Study")
    series_in: dict[str, Any] = study["Series"]
    if not series_in:
        raise RuleError("Study.Series is empty: name at least one series")
    series: SeriesMap = {}
    owner: dict[str, str] = {}
    for uid, body in series_in.items():
        check_uid(uid, "series")
        where = f"Study.Series[{uid!r}]"
        if not isinstance(body, dict):
            raise RuleError(f"{where} must be an object, got {show(body)}")
        _only_keys(body, ("Instances",), where)
        insts = body.get("Instances", {})
        if not isinstance(insts, dict):
            raise RuleError(f"{where}.Instances must be an object, got {show(insts)}")
        for sop, value in insts.items():
            check_uid(sop, "SOP instance")
            if value != {}:
                raise RuleError(f"{where}.Instances[{sop!r}] must be {{}}, got {show(value)}")
            if sop in owner:
                raise RuleError(f"instance {sop!r} is listed under two series ({owner[sop]!r} and {uid!r})")
            owner[sop] = uid
        series[uid] = set(insts) if insts else None
    canonical = canonical_attributes(series)
    if len(canonical) > MAX_ATTRIBUTES_CHARS:
        raise RuleError(
            f"too long: {len(canonical):,} characters (the service accepts at most {MAX_ATTRIBUTES_CHARS:,})"
        )
    return canonical


# ---------------------------------------------------------------- one row


@dataclass(frozen=True)
class RowContext:
    """What every row of one manifest shares."""

    default_datastore_id: str | None = None


def convert_row(
    cells: Mapping[str, Any], row: int, ctx: RowContext, *,
    bad: Iterable[Problem] = (), extras: str | None = None,
) -> CopySpec | list[Problem]:
    """One manifest row -> CopySpec (carrying `extras`), or every problem found in it.

    `bad`: problems the reader found in the raw cells (control characters); the other
    rules of those columns are skipped, as for a mistyped cell.
    """
    problems: list[Problem] = []
    mistyped: list[Problem] = list(bad)  # a bad cell's other rules would only repeat it
    said = {col for col, _ in mistyped}
    text: dict[str, str] = {}
    for col in TEXT_COLUMNS:
        value = cells.get(col)
        if type(value) is str:  # every CSV cell: the hot path of a million-row manifest
            text[col] = value.strip()
            continue
        if value is None:  # a column the manifest does not have
            text[col] = ""
            continue
        try:
            text[col] = text_cell(col, value)
        except RuleError as exc:
            if col not in said:
                mistyped.append((col, str(exc)))
            text[col] = ""
    flags: dict[str, bool] = {}
    for col in BOOL_COLUMNS:
        value = cells.get(col)
        if value is None or value == "":  # absent or empty: the common case, no call
            flags[col] = False
            continue
        try:
            flags[col] = bool_cell(value)
        except RuleError as exc:
            if col not in said:
                mistyped.append((col, str(exc)))

    def rule(col: str, check: Callable[..., Any], *args: Any) -> None:
        try:
            check(*args)
        except RuleError as exc:
            problems.append((col, str(exc)))

    row_id = text["row_id"] or str(row)
    if len(row_id) > MAX_ROW_ID_CHARS:
        problems.append(("row_id", f"longer than {MAX_ROW_ID_CHARS} characters: {show(row_id)}"))
    ds = text["datastore_id"] or (ctx.default_datastore_id or "")
    if not ds:
        problems.append(("datastore_id", "missing data store id (fill the column or pass --datastore-id)"))
    elif not ID_RE.fullmatch(ds):
        rule("datastore_id", check_id, ds, "a data store")
    src = text["source_image_set_id"]
    if not src:
        problems.append(("source_image_set_id", "missing source image set id"))
    elif not ID_RE.fullmatch(src):
        rule("source_image_set_id", check_id, src, "an image set")
    dst = text["destination_image_set_id"]
    if dst:
        if not ID_RE.fullmatch(dst):
            rule("destination_image_set_id", check_id, dst, "an image set")
        if dst == src:
            problems.append(("destination_image_set_id", f"destination is the source image set: {show(dst)}"))
    for col in ("source_version_id", "destination_version_id"):
        if text[col]:
            rule(col, check_version, text[col])
    if text["destination_version_id"] and not dst:
        problems.append(
            ("destination_version_id", "a destination version without destination_image_set_id")
        )
    attrs = _row_subset(text, problems)
    if mistyped:
        bad_columns = {col for col, _ in mistyped}
        problems = mistyped + [p for p in problems if p[0] not in bad_columns]
    if problems:
        return _ordered(problems)
    return CopySpec(
        manifest_row=row,
        row_id=row_id,
        datastore_id=ds,
        source_image_set_id=src,
        source_version_id=text["source_version_id"] or None,
        destination_image_set_id=dst or None,
        destination_version_id=text["destination_version_id"] or None,
        copiable_attributes=attrs,
        force=flags["force"],
        promote_to_primary=flags["promote_to_primary"],
        extras=extras,
    )


def _ordered(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: _COLUMN_ORDER.get(p[0] or "", -1))


def _row_subset(text: Mapping[str, str], problems: list[Problem]) -> str | None:
    raw, series, sop = text["copiable_attributes"], text["series_instance_uid"], text["sop_instance_uid"]
    if raw and series:
        problems.append(
            ("series_instance_uid", "give copiable_attributes or series_instance_uid, not both")
        )
        return None
    if sop and not series:
        problems.append(("sop_instance_uid", "sop_instance_uid needs series_instance_uid"))
        return None
    try:
        if raw:
            return parse_copiable_attributes(raw)
    except RuleError as exc:
        problems.append(("copiable_attributes", str(exc)))
        return None
    if not series:
        return None
    several = series.split()  # whole series, separated by spaces: copied together in one call
    if len(several) > 1 and sop:
        problems.append(("sop_instance_uid", "sop_instance_uid needs a single "
                         "series_instance_uid (this row lists several series)"))
        return None
    ok = True
    cells = [("series_instance_uid", uid, "series") for uid in several]
    for col, value, what in [*cells, ("sop_instance_uid", sop, "SOP instance")]:
        if value:
            try:
                check_uid(value, what)
            except RuleError as exc:
                problems.append((col, str(exc)))
                ok = False
    if not ok:
        return None
    if len(several) > 1:
        return canonical_attributes({uid: None for uid in several})
    return canonical_attributes({series: [sop] if sop else None})


# ---------------------------------------------------------------- across rows


@dataclass(frozen=True)
class CrossRowProblem:
    row: int
    line: int | None
    column: str | None
    message: str


class CrossRowChecker:
    """Rules that need the whole manifest: duplicate row ids, repeated rows,
    contradictory source version pins. Feed every valid row, then `finish()`."""

    def __init__(self) -> None:
        self.datastores: set[str] = set()
        self.subset_rows = 0
        self._image_set_hash = array("q")  # counted once at the end: a set of a million ints is ~70 MB
        self._destinations: set[int] = set()
        self._pins: dict[int, tuple[str, int, int | None]] = {}  # image set -> first (pin, row, line)
        self._pin_clash: dict[int, list[tuple[str, str, int, int | None]]] = {}  # (id, pin, row, line)
        self._id_hash = array("q")
        self._key_hash = array("q")
        self._rows = array("q")
        self._lines = array("q")

    def add(self, spec: CopySpec, line: int | None) -> None:
        ds = spec.datastore_id
        self.datastores.add(ds)
        src = hash((ds, spec.source_image_set_id))
        self._image_set_hash.append(src)
        if spec.destination_image_set_id:
            dst = hash((ds, spec.destination_image_set_id))
            self._image_set_hash.append(dst)
            self._destinations.add(dst)
        if spec.is_subset:
            self.subset_rows += 1
        if spec.source_version_id is not None:
            first = self._pins.get(src)
            if first is None:
                self._pins[src] = (spec.source_version_id, spec.manifest_row, line)
            elif first[0] != spec.source_version_id:
                clash = (spec.source_image_set_id, spec.source_version_id, spec.manifest_row, line)
                self._pin_clash.setdefault(src, []).append(clash)
        self._id_hash.append(hash(spec.row_id))
        self._key_hash.append(
            hash(
                (ds, spec.source_image_set_id, spec.destination_image_set_id, spec.copiable_attributes,
                 spec.force, spec.promote_to_primary)
            )
        )
        self._rows.append(spec.manifest_row)
        self._lines.append(line if line is not None else -1)

    @property
    def image_sets(self) -> int:
        """How many distinct image sets (per data store) the rows touch."""
        if not self._image_set_hash:
            return 0
        import numpy as np

        return int(np.unique(np.frombuffer(self._image_set_hash, dtype=np.int64)).size)

    def finish(self) -> list[CrossRowProblem]:
        out: list[CrossRowProblem] = []
        for first, later in _repeats(self._id_hash):
            out.append(self._problem(later, "row_id", f"duplicate row_id: row {self._rows[later]} "
                                     f"has the same row_id as row {self._rows[first]}"))
        for first, later in _repeats(self._key_hash):
            out.append(self._problem(later, None, f"row {self._rows[later]} repeats row {self._rows[first]} "
                                     "(same source, destination, subset and flags): a second copy would "
                                     "duplicate the work"))
        for key, clashes in self._pin_clash.items():
            if key in self._destinations:
                continue  # the image set changes during the run: later pins are superseded
            pin, row, _ = self._pins[key]
            for image_set, other, crow, cline in clashes:
                out.append(CrossRowProblem(
                    crow, cline, "source_version_id",
                    f"row {crow} pins image set {image_set} at version {other!r} but row {row} pins it at "
                    f"{pin!r}, and no row of the manifest writes to it: one of them must fail"))
        out.sort(key=lambda p: p.row)
        return out

    def _problem(self, index: int, column: str | None, message: str) -> CrossRowProblem:
        line = self._lines[index]
        return CrossRowProblem(self._rows[index], None if line < 0 else line, column, message)


def _repeats(hashes: array) -> list[tuple[int, int]]:
    """(index of first occurrence, index of a later occurrence) for every repeated value."""
    if len(hashes) < 2:
        return []
    import numpy as np

    values = np.frombuffer(hashes, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    same = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1  # positions equal to their predecessor
    out: list[tuple[int, int]] = []
    first = -1
    prev_pos = -2
    for pos in same.tolist():
        if pos != prev_pos + 1:
            first = int(order[pos - 1])
        out.append((first, int(order[pos])))
        prev_pos = pos
    return out
