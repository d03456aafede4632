"""What a manifest reader (manifest_csv, manifest_parquet) hands to manifest/scan.py.

A reader has a `header` (column names by position) and `batches()`, an iterator of
RawBatch: the cells of consecutive records, by header position, as Python values. The
text checks that would cost a Python call per cell run here, on whole Arrow columns:
UTF-8 validity, and a mask of the records holding a control character or a line break
(`suspect`), which manifest/scan.py then checks cell by cell (validate.control_problems).

A reader raises SourceError when the file cannot be read (at all, or from some record
on); manifest/scan.py adds the file's name and the row number.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# C0 controls but tab, line breaks included: a record with one is checked cell by cell.
_SUSPECT_RE = r"[\x00-\x08\x0a-\x1f]"


@dataclass
class RawBatch:
    columns: list[list[Any]]  # cells by header position, one list per column
    lines: list[int] | None  # file line of each record (CSV), None for Parquet
    suspect: set[int] = field(default_factory=set)  # records to check cell by cell
    broken: dict[int, str] = field(default_factory=dict)  # record -> why its cells cannot be read

    @property
    def size(self) -> int:
        return len(self.columns[0]) if self.columns else 0


class SourceError(Exception):
    """The file cannot be read (from `line`, in `column`, if known). `next_row`: the
    problem is in the record after the last one delivered (so it has a row number)."""

    def __init__(self, message: str, *, line: int | None = None, column: str | None = None,
                 next_row: bool = False) -> None:
        super().__init__(message)
        self.message, self.line, self.column, self.next_row = message, line, column, next_row


class Source(Protocol):
    header: list[str]

    def batches(self) -> Iterator[RawBatch]: ...


def _is_text(array: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(array.type) or pa.types.is_large_string(array.type)


def first_invalid_utf8(columns: Sequence[Any]) -> tuple[int, int, str] | None:
    """(record, column position, what) of the first cell that is not valid UTF-8, or None.

    Arrow string arrays are not checked on creation (the CSV reader runs with
    check_utf8=False, Parquet trusts the writer); one full validation per column is
    cheap, and only a failure is located value by value."""
    import pyarrow as pa

    found: tuple[int, int, str] | None = None
    for pos, array in enumerate(columns):
        if not _is_text(array):
            continue
        try:
            array.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        raw = array.view(pa.binary() if pa.types.is_string(array.type) else pa.large_binary())
        for i, value in enumerate(raw.to_pylist()):
            if found is not None and i >= found[0]:
                break
            try:
                if value is not None:
                    value.decode("utf-8")
            except UnicodeDecodeError as exc:
                found = (i, pos, f"byte 0x{value[exc.start]:02x} at byte {exc.start + 1} of the cell")
    return found


SMALL_BATCH = 4096  # records: below this, Python's re (pyarrow.compute takes 0.2 s to import)


def suspect_records(columns: Sequence[Any]) -> list[int]:
    """Records with a control character or a line break in a text cell."""
    if columns and len(columns[0]) <= SMALL_BATCH:
        return _suspect_small(columns)
    import pyarrow.compute as pc

    mask = None
    for array in columns:
        if not _is_text(array):
            continue
        hits = pc.match_substring_regex(array, _SUSPECT_RE)
        mask = hits if mask is None else pc.or_kleene(mask, hits)
    if mask is None or not pc.any(mask).as_py():
        return []
    return pc.indices_nonzero(mask.fill_null(False)).to_pylist()


def _suspect_small(columns: Sequence[Any]) -> list[int]:
    """suspect_records of a small batch, cell by cell in Python: the same pattern."""
    import re

    search = re.compile(_SUSPECT_RE).search
    hits: set[int] = set()
    for array in columns:
        if _is_text(array):
            hits.update(i for i, value in enumerate(array.to_pylist())
                        if value is not None and search(value))
    return sorted(hits)


def one_line(text: str) -> str:
    """An exception's text on one line (pyarrow's may span several)."""
    return " ".join(str(text).split())


def line_breaks(text: str) -> int:
    """How many lines `text` spans beyond its first (CRLF, LF or a lone CR each end one)."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")
