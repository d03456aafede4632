"""Read a manifest (CSV, CSV.gz or Parquet) as a stream of validated CopySpec batches.

Formats by extension: ``.csv``, ``.csv.gz`` (pandas, in chunks, every cell as text,
UTF-8 with or without BOM), ``.parquet`` / ``.pq`` (pyarrow, in record batches;
columns may be typed: bool or 0/1 ints for the flags, ints for versions and row_id).

Rows are the data rows, numbered from 1. A row whose every cell is empty (a blank
line, or ``,,,``) is not a row: it is skipped and not numbered. For CSV, errors also
name the file line; it is exact unless a quoted cell spans lines.

`read_specs` applies the per-row rules (batchcopy.validate) and raises ManifestInvalid
for the first batch with a bad row; `validate` makes one full pass and also applies
the rules that span rows. Neither holds more than one batch of rows at a time.
"""

from __future__ import annotations

import csv
import difflib
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchcopy.specs import CopySpec
from batchcopy.validate import BOOL_COLUMNS, ID_RE, TEXT_COLUMNS, CrossRowChecker, RowContext, convert_row, show

COLUMNS = TEXT_COLUMNS + BOOL_COLUMNS  # every column a manifest may have
REQUIRED_COLUMNS = ("source_image_set_id",)  # plus datastore_id without a default
_MAX_LISTED = 20


@dataclass(frozen=True)
class ManifestError:
    path: str
    row: int | None
    column: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path
        if self.row is not None:
            where += f": row {self.row}"
            if self.line is not None:
                where += f" (line {self.line})"
        elif self.line is not None:
            where += f": line {self.line}"
        if self.column is not None:
            where += f"{',' if self.row is not None or self.line is not None else ':'} column {self.column!r}"
        return f"{where}: {self.message}"


class ManifestInvalid(Exception):
    """The manifest cannot be used; `errors` says why (nothing was sent)."""

    def __init__(self, errors: list[ManifestError]) -> None:
        self.errors = list(errors)
        super().__init__(self._text())

    def _text(self) -> str:
        lines = [str(e) for e in self.errors[:_MAX_LISTED]]
        if len(self.errors) > _MAX_LISTED:
            lines.append(f"... and {len(self.errors) - _MAX_LISTED} more")
        return "\n".join(lines) if lines else "invalid manifest"


@dataclass(frozen=True)
class ValidationReport:
    path: str
    rows: int
    errors: list[ManifestError]
    datastores: int
    image_sets: int
    subset_rows: int
    more_errors: int = 0  # errors found beyond max_errors (not listed)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.more_errors


# ---------------------------------------------------------------- reading


@dataclass
class _RawBatch:
    columns: dict[str, list[Any]]
    lines: list[int] | None  # file line of each entry (CSV), None for Parquet
    size: int


def _format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return "csv"
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    return ""


def _csv_head(path: Path) -> tuple[list[str], list[str] | None]:
    """The header and the first data record (pandas would silently turn a longer
    first record into an index column, so manifest.py checks it itself)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:  # type: ignore[operator]
        records = csv.reader(fh)
        header = next(records, None)
        first = next(records, None)
    return ([] if header is None else header), first


class _Reader:
    """The header and a stream of raw batches of one manifest file."""

    def __init__(self, path: Path, display: str, batch_size: int) -> None:
        if not path.exists():
            raise FileNotFoundError(f"manifest not found: {display}")
        if path.is_dir():
            raise ManifestInvalid([ManifestError(display, None, None, "is a directory, not a manifest file")])
        self.path, self.display, self.batch_size = path, display, batch_size
        self.kind = _format(path)
        if not self.kind:
            raise self._invalid("unknown manifest format (expected .csv, .csv.gz, .parquet or .pq)")
        try:
            self.header = self._read_header()
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
            raise self._invalid(f"cannot read the {self.kind} header: {exc}") from None
        if not self.header:
            raise self._invalid("empty file: no header row")

    def _invalid(self, message: str) -> ManifestInvalid:
        return ManifestInvalid([ManifestError(self.display, None, None, message)])

    def _read_header(self) -> list[str]:
        if self.kind == "csv":
            header, first = _csv_head(self.path)
            if header and first is not None and len(first) > len(header):
                raise ValueError(f"line 2 has {len(first)} fields, the header {len(header)}")
            return [c.strip() for c in header]
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(self.path).schema_arrow.names)

    def batches(self) -> Iterator[_RawBatch]:
        try:
            yield from self._csv() if self.kind == "csv" else self._parquet()
        except ManifestInvalid:
            raise
        except (OSError, UnicodeDecodeError, ValueError, EOFError) as exc:
            # pandas' ParserError is a ValueError; pyarrow's ArrowInvalid too
            raise self._invalid(f"cannot read the file: {str(exc).strip()}") from None

    def _csv(self) -> Iterator[_RawBatch]:
        import pandas as pd

        chunks = pd.read_csv(
            self.path, chunksize=self.batch_size, dtype=str, keep_default_na=False,
            skip_blank_lines=False, encoding="utf-8-sig", header=0, index_col=False,
            compression="gzip" if self.path.name.lower().endswith(".gz") else None,
        )
        with chunks as reader:
            for chunk in reader:
                if chunk.shape[1] != len(self.header):
                    raise self._invalid(f"pandas read {chunk.shape[1]} columns, the header has {len(self.header)}")
                cols = {name: chunk.iloc[:, i].tolist() for i, name in enumerate(self.header)}
                lines = [int(i) + 2 for i in chunk.index]
                yield _RawBatch(cols, lines, len(chunk))

    def _parquet(self) -> Iterator[_RawBatch]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        for rb in pf.iter_batches(batch_size=self.batch_size):
            cols = {name: rb.column(i).to_pylist() for i, name in enumerate(rb.schema.names)}
            yield _RawBatch(cols, None, rb.num_rows)


def _header_errors(header: list[str], display: str, default_datastore_id: str | None) -> tuple[
    list[ManifestError], list[ManifestError]
]:
    """(fatal errors: missing required columns / duplicates, other header errors)."""
    fatal: list[ManifestError] = []
    other: list[ManifestError] = []
    seen: set[str] = set()
    for i, name in enumerate(header, start=1):
        if not name:
            other.append(ManifestError(display, None, None, f"header column {i} has no name"))
        elif name in seen:
            fatal.append(ManifestError(display, None, name, "appears twice in the header"))
        elif name not in COLUMNS:
            guess = difflib.get_close_matches(name.lower(), COLUMNS, n=1, cutoff=0.6)
            hint = f" (did you mean {guess[0]!r}?)" if guess else f" (accepted: {', '.join(COLUMNS)})"
            other.append(ManifestError(display, None, name, f"unknown column{hint}"))
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            fatal.append(ManifestError(display, None, name, "required column is missing"))
    if "datastore_id" not in seen and not default_datastore_id:
        fatal.append(ManifestError(display, None, "datastore_id",
                                   "column is missing (add it, or pass --datastore-id)"))
    if default_datastore_id is not None and not ID_RE.fullmatch(default_datastore_id):
        fatal.append(ManifestError(display, None, "datastore_id",
                                   f"--datastore-id is not a data store id (expected 32 characters [0-9a-z]): "
                                   f"{show(default_datastore_id)}"))
    return fatal, other


def _rows(reader: _Reader, ctx: RowContext) -> Iterator[list[tuple[int, int | None, CopySpec | list]]]:
    """Per raw batch: (row number, line, CopySpec or problems) of its non-blank rows."""
    names = [n for n in reader.header if n in COLUMNS]
    row = 0
    for raw in reader.batches():
        cols = [(n, raw.columns[n]) for n in names if n in raw.columns]
        every = list(raw.columns.values())
        out = []
        for i in range(raw.size):
            if all(_blank(c[i]) for c in every):
                continue
            row += 1
            cells = {n: values[i] for n, values in cols}
            line = raw.lines[i] if raw.lines is not None else None
            out.append((row, line, convert_row(cells, row, ctx)))
        yield out


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value != value


def _errors(display: str, row: int, line: int | None, problems: list) -> list[ManifestError]:
    return [ManifestError(display, row, col, msg, line) for col, msg in problems]


def read_specs(
    path: Path,
    *,
    display_name: str | None = None,
    default_datastore_id: str | None = None,
    batch_size: int = 10_000,
) -> Iterator[list[CopySpec]]:
    """Yield the manifest's rows as CopySpec batches (manifest order).

    Raises FileNotFoundError if the file is missing, ManifestInvalid for a bad header
    (before yielding anything), for the first batch holding a bad row (all errors of
    that batch), or, at the end, for a manifest without rows. Cross-row rules are
    `validate`'s job.
    """
    display = display_name or str(path)
    reader = _Reader(path, display, batch_size)
    fatal, other = _header_errors(reader.header, display, default_datastore_id)
    if fatal or other:
        raise ManifestInvalid(fatal + other)
    ctx = RowContext(default_datastore_id)
    total = 0
    for batch in _rows(reader, ctx):
        specs: list[CopySpec] = []
        errors: list[ManifestError] = []
        for row, line, result in batch:
            if isinstance(result, CopySpec):
                specs.append(result)
            else:
                errors.extend(_errors(display, row, line, result))
        if errors:
            raise ManifestInvalid(errors)
        total += len(specs)
        if specs:
            yield specs
    if total == 0:
        raise ManifestInvalid([ManifestError(display, None, None, "the manifest has no rows")])


def validate(
    path: Path,
    *,
    display_name: str | None = None,
    default_datastore_id: str | None = None,
    max_errors: int = 1000,
    batch_size: int = 10_000,
) -> ValidationReport:
    """One full streaming pass: per-row and cross-row rules.

    Returns every problem (up to `max_errors`, the rest counted in `more_errors`).
    Raises FileNotFoundError for a missing file and ManifestInvalid when the file
    cannot be read as a manifest at all (unknown format, no header, a required
    column missing, a column named twice). Unknown columns are reported, and the
    rows are still checked. Cross-row rules only see rows that passed the row rules.
    """
    display = display_name or str(path)
    reader = _Reader(path, display, batch_size)
    fatal, errors = _header_errors(reader.header, display, default_datastore_id)
    if fatal:
        raise ManifestInvalid(fatal + errors)
    ctx = RowContext(default_datastore_id)
    checker = CrossRowChecker()
    rows = 0
    more = 0

    def keep(new: list[ManifestError]) -> None:
        nonlocal more
        room = max(0, max_errors - len(errors))
        errors.extend(new[:room])
        more += len(new) - len(new[:room])

    unreadable = False
    try:
        for batch in _rows(reader, ctx):
            for row, line, result in batch:
                rows = row
                if isinstance(result, CopySpec):
                    checker.add(result, line)
                else:
                    keep(_errors(display, row, line, result))
    except ManifestInvalid as exc:  # unreadable from some point on: report what we have
        keep(exc.errors)
        unreadable = True
    if rows == 0 and not unreadable:
        keep([ManifestError(display, None, None, "the manifest has no rows")])
    keep([ManifestError(display, p.row, p.column, p.message, p.line) for p in checker.finish()])
    errors.sort(key=lambda e: -1 if e.row is None else e.row)  # stable: file-level first, then by row
    return ValidationReport(
        path=display, rows=rows, errors=errors, datastores=len(checker.datastores),
        image_sets=checker.image_sets, subset_rows=checker.subset_rows, more_errors=more,
    )


class _TwoPassScan:
    """Temporary: validate, then read (the one-pass reader replaces it)."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        self.path, self.kwargs = path, kwargs
        self.report: ValidationReport | None = None

    def __iter__(self) -> Iterator[list[CopySpec]]:
        self.report = validate(self.path, **self.kwargs)
        if not self.report.ok:
            return
        yield from read_specs(self.path, **self.kwargs)


def scan_manifest(path: Path, *, display_name: str | None = None,
                  default_datastore_id: str | None = None) -> _TwoPassScan:
    return _TwoPassScan(path, display_name=display_name, default_datastore_id=default_datastore_id)
