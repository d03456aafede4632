"""One manifest cell's rules: text and boolean cells, ids, version ids, DICOM UIDs and
control characters, each broken rule a `RuleError` whose message is meant for the user;
the columns a manifest may have, and the API's limits on each (manifest/rules.py checks a
whole row with them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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
MAX_ROW_ID_CHARS = 256

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
COLUMN_ORDER = {c: i for i, c in enumerate(TEXT_COLUMNS + BOOL_COLUMNS)}
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
        if bad is None and col in COLUMN_ORDER and col not in MULTILINE_COLUMNS:
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
