"""Read a manifest (CSV, CSV.gz or Parquet) once, as a stream of validated CopySpec batches.

Formats by extension: ``.csv``, ``.csv.gz`` (batchcopy.manifest_csv: pyarrow's
streaming CSV reader, every cell as text, UTF-8 with or without BOM, the delimiter
given or sniffed), ``.parquet`` / ``.pq`` (batchcopy.manifest_parquet: record batches;
columns may be typed: bool or 0/1 ints for the flags, ints for versions and row_id).
Nothing here imports pandas.

Rows are the data rows, numbered from 1. A row whose every cell is empty (a blank
line, or ``,,,``) is not a row: it is skipped and not numbered. For CSV, errors also
name the file line (where the row starts; quoted cells may span lines).

`scan_manifest` is the one pass a run needs: iterating it yields the valid rows as
CopySpec batches while it collects every row's problems, and at the end it applies
the rules that span rows and holds the ValidationReport. `validate` is that pass
with the rows discarded; `read_specs` raises ManifestInvalid at the first batch with
a bad row. None of them holds more than one batch of rows at a time.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from batchcopy.manifest.source import SourceError, Source
from batchcopy.core.specs import CopySpec
from batchcopy.manifest.rules import (
    BOOL_COLUMNS,
    ID_RE,
    TEXT_COLUMNS,
    CrossRowChecker,
    RowContext,
    control_problems,
    convert_row,
    show,
)

COLUMNS = TEXT_COLUMNS + BOOL_COLUMNS  # every column a manifest may have
REQUIRED_COLUMNS = ("source_image_set_id",)  # plus datastore_id without a default
EXTRA_COLUMNS_MODES = ("error", "ignore")
_MAX_LISTED = 20
_TYPO_CUTOFF = 0.85  # with extra_columns="ignore", a name this close to a known column is a typo


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


# ---------------------------------------------------------------- one pass


def _format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return "csv"
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    return ""


Chunk = tuple[list[CopySpec], list[ManifestError]]


class ManifestScan:
    """One read of one manifest; see `scan_manifest`."""

    def __init__(
        self,
        path: Path,
        *,
        display_name: str | None = None,
        default_datastore_id: str | None = None,
        batch_size: int = 10_000,
        delimiter: str | None = None,
        extra_columns: Literal["error", "ignore"] = "error",
        max_errors: int = 1000,
    ) -> None:
        if extra_columns not in EXTRA_COLUMNS_MODES:
            raise ValueError(f"extra_columns must be one of {EXTRA_COLUMNS_MODES}, not {extra_columns!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.path = Path(path)
        self.display = display_name or str(path)
        self.batch_size, self.max_errors = batch_size, max_errors
        self.rows = 0  # rows read so far (blank lines are not rows)
        self.more_errors = 0
        self._source = self._open(delimiter, batch_size)
        self._extras_allowed = extra_columns == "ignore"
        self.header: list[str] = list(self._source.header)
        fatal, other, self._extras = _header_problems(
            self.header, default_datastore_id, extra_columns, self._source)
        if fatal:
            raise ManifestInvalid([self._error(col, msg) for col, msg in fatal + other])
        first = getattr(self._source, "first_record", None)
        if first is not None and first[0] > len(self.header):
            raise ManifestInvalid([ManifestError(
                self.display, 1, None, f"{first[0]} cells, but the header has {len(self.header)} columns: "
                "is a column name missing in the header, or is the delimiter wrong?", first[1])])
        self._errors = [self._error(col, msg) for col, msg in other]
        self._ctx = RowContext(default_datastore_id)
        self._checker = CrossRowChecker()
        self._unreadable = False
        self._report: ValidationReport | None = None
        self._iterator: Iterator[list[CopySpec]] | None = None
        self._chunks_started = False

    # ---- public

    @property
    def extra_columns(self) -> list[str]:
        """The columns carried in CopySpec.extras (extra_columns="ignore"), in file order."""
        return [name for _, name in self._extras]

    @property
    def form(self) -> dict[str, Any]:
        """The manifest's form, for a retry manifest written like it: its header as read,
        and its CSV delimiter (None for Parquet)."""
        return {"columns": list(self.header), "delimiter": getattr(self._source, "delimiter", None)}

    @property
    def errors(self) -> list[ManifestError]:
        """The problems found so far (up to max_errors; the rest are counted in more_errors)."""
        return list(self._errors)

    @property
    def report(self) -> ValidationReport:
        """The ValidationReport; only once the scan has been read to the end."""
        if self._report is None:
            raise RuntimeError("the manifest scan is not finished: iterate it to the end, or call finish()")
        return self._report

    def __iter__(self) -> Iterator[list[CopySpec]]:
        return self.batches()

    def batches(self) -> Iterator[list[CopySpec]]:
        """The valid rows as CopySpec lists, in manifest order (one iterator per scan)."""
        if self._iterator is None:
            self._iterator = self._batches()
        return self._iterator

    def finish(self) -> ValidationReport:
        """Read whatever is left (its rows are checked, then dropped); the report."""
        for _ in self.batches():
            pass
        return self.report

    # ---- reading

    def _open(self, delimiter: str | None, batch_size: int) -> Source:
        if not self.path.exists():
            raise FileNotFoundError(f"manifest not found: {self.display}")
        if self.path.is_dir():
            raise self._invalid("is a directory, not a manifest file")
        kind_of_file = _not_regular(self.path)
        if kind_of_file:  # a pipe would block the read, and a manifest is read twice
            raise self._invalid(f"is {kind_of_file}, not a regular file: a manifest is read "
                                "more than once; save it to a file first")
        kind = _format(self.path)
        if not kind:
            raise self._invalid("unknown manifest format (expected .csv, .csv.gz, .parquet or .pq)")
        try:
            if kind == "csv":
                from batchcopy.manifest.csvfile import CsvSource

                return CsvSource(self.path, delimiter)
            from batchcopy.manifest.parquetfile import ParquetSource

            return ParquetSource(self.path, batch_size)
        except SourceError as exc:
            raise ManifestInvalid([self._source_error(exc)]) from None
        except ValueError as exc:  # the delimiter: say which option to fix
            raise self._invalid(f"--delimiter: {exc}") from None
        except OSError as exc:
            raise self._invalid(f"cannot open the file: {exc.strerror or exc}") from None

    def _batches(self) -> Iterator[list[CopySpec]]:
        for specs, errors in self._chunks():
            self._keep(errors)
            if specs:
                yield specs
        self._conclude()

    def _chunks(self) -> Iterator[Chunk]:
        """(valid specs, problems) of every `batch_size` rows, then of an unreadable rest."""
        if self._chunks_started:
            raise RuntimeError("a manifest scan reads its file once")
        self._chunks_started = True
        known = [(name, pos) for pos, name in enumerate(self.header) if name in COLUMNS]
        extras = self._extras
        unnamed = [] if self._extras_allowed else [pos for pos, name in enumerate(self.header)
                                                   if not name]
        specs: list[CopySpec] = []
        errors: list[ManifestError] = []
        try:
            for raw in self._source.batches():
                cols, lines = raw.columns, raw.lines
                for i in range(raw.size):
                    if i not in raw.broken and _blank_row(cols, i):
                        continue
                    self.rows += 1
                    row = self.rows
                    line = None if lines is None else lines[i]
                    if i in raw.broken:
                        errors.append(ManifestError(self.display, row, None, raw.broken[i], line))
                    else:
                        cells = {name: cols[pos][i] for name, pos in known}
                        own = {name: cols[pos][i] for pos, name in extras} if extras else None
                        bad = control_problems({**cells, **(own or {})}) if i in raw.suspect else ()
                        bad = (*bad, *_unnamed_cells(cols, unnamed, i))
                        result = convert_row(cells, row, self._ctx, bad=bad,
                                             extras=None if own is None else _extras_json(own))
                        if isinstance(result, CopySpec):
                            specs.append(result)
                            self._checker.add(result, line)
                        else:
                            errors.extend(ManifestError(self.display, row, col, msg, line) for col, msg in result)
                    if row % self.batch_size == 0:
                        yield specs, errors
                        specs, errors = [], []
        except SourceError as exc:  # unreadable from some point on: what was read still counts
            self._unreadable = True
            errors.append(self._source_error(exc))
        if specs or errors:
            yield specs, errors

    def _conclude(self) -> None:
        if self.rows == 0 and not self._unreadable:
            self._keep([ManifestError(self.display, None, None, "the manifest has no rows")])
        self._keep([ManifestError(self.display, p.row, p.column, p.message, p.line)
                    for p in self._checker.finish()])
        self._errors.sort(key=lambda e: -1 if e.row is None else e.row)  # stable: file-level first, then by row
        checker = self._checker
        self._report = ValidationReport(
            path=self.display, rows=self.rows, errors=self._errors, datastores=len(checker.datastores),
            image_sets=checker.image_sets, subset_rows=checker.subset_rows, more_errors=self.more_errors,
        )

    # ---- errors

    def _keep(self, new: list[ManifestError]) -> None:
        room = max(0, self.max_errors - len(self._errors))
        self._errors.extend(new[:room])
        self.more_errors += len(new) - len(new[:room])

    def _error(self, column: str | None, message: str) -> ManifestError:
        return ManifestError(self.display, None, column, message)

    def _invalid(self, message: str) -> ManifestInvalid:
        return ManifestInvalid([self._error(None, message)])

    def _source_error(self, exc: SourceError) -> ManifestError:
        row = self.rows + 1 if exc.next_row else None
        return ManifestError(self.display, row, exc.column, exc.message, exc.line)


def _not_regular(path: Path) -> str | None:
    """'a named pipe', 'a device', 'a socket' for what is not a regular file, else None."""
    import stat

    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


def _blank_row(cols: list[list[Any]], i: int) -> bool:
    for col in cols:
        value = col[i]
        if not (value is None or (isinstance(value, str) and not value.strip()) or value != value):
            return False
    return True


def _unnamed_cells(cols: list[list[Any]], unnamed: list[int], i: int) -> list[tuple[str | None, str]]:
    """Cells in columns the header leaves unnamed (a spreadsheet's empty trailing columns
    are fine while they stay empty): each a problem of the row, saying what to do."""
    out: list[tuple[str | None, str]] = []
    for pos in unnamed:
        value = cols[pos][i]
        if value is None or value != value or (isinstance(value, str) and not value.strip()):
            continue
        out.append((None, f"header column {pos + 1} has no name, but this row has "
                          f"{show(str(value))} in it: name the column (and pass --extra-columns "
                          "ignore to keep it) or empty the cell"))
    return out


def _extras_json(own: dict[str, Any]) -> str:
    """The row's own columns as compact JSON text (column -> cell as text, "" if empty)."""
    text = {name: "" if v is None else ("true" if v else "false") if isinstance(v, bool) else str(v)
            for name, v in own.items()}
    return json.dumps(text, ensure_ascii=False, separators=(",", ":"))


def _header_problems(
    header: list[str], default_datastore_id: str | None, extra_columns: str, source: Any,
) -> tuple[list[tuple[str | None, str]], list[tuple[str | None, str]], list[tuple[int, str]]]:
    """(fatal problems: the columns cannot be read; other problems; the extra columns
    carried in CopySpec.extras as (position, name))."""
    fatal: list[tuple[str | None, str]] = []
    other: list[tuple[str | None, str]] = []
    extras: list[tuple[int, str]] = []
    hint = _delimiter_hint(header, source)
    if hint:
        return [(None, hint)], [], []
    seen: set[str] = set()
    for i, name in enumerate(header, start=1):
        if not name:  # a spreadsheet's empty column: skipped (a cell in it is a row's problem)
            continue
        if name in seen:
            fatal.append((name, "appears twice in the header"))
        elif name not in COLUMNS:
            guess = _close_column(name, 0.6)
            if extra_columns == "ignore":
                typo = _close_column(name, _TYPO_CUTOFF)
                if typo:
                    other.append((name, f"unknown column, too close to {typo!r} to be carried as a column "
                                        "of your own: rename it"))
                else:
                    extras.append((i - 1, name))
            else:
                said = f"did you mean {guess!r}?" if guess else f"accepted: {', '.join(COLUMNS)}"
                other.append((name, f"unknown column ({said}); to keep columns of your own, pass "
                                    "--extra-columns ignore"))
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            fatal.append((name, "required column is missing"))
    if "datastore_id" not in seen and not default_datastore_id:
        fatal.append(("datastore_id", "column is missing (add it, or pass --datastore-id)"))
    if default_datastore_id is not None and not ID_RE.fullmatch(default_datastore_id):
        fatal.append(("datastore_id", f"--datastore-id is not a data store id (expected 32 characters "
                                      f"[0-9a-z]): {show(default_datastore_id)}"))
    return fatal, other, extras


def _close_column(name: str, cutoff: float) -> str | None:
    normal = name.strip().lower().replace(" ", "_").replace("-", "_")
    if normal in COLUMNS:
        return normal
    guess = difflib.get_close_matches(normal, COLUMNS, n=1, cutoff=cutoff)
    return guess[0] if guess else None


def _delimiter_hint(header: list[str], source: Any) -> str | None:
    """For a CSV header read as one unknown column holding another delimiter: what to pass."""
    used = getattr(source, "delimiter", None)
    if used is None or len(header) != 1 or header[0] in COLUMNS:
        return None
    from batchcopy.manifest.csvfile import DELIMITERS, delimiter_option

    found = [d for d in DELIMITERS if d != used and d in header[0]]
    if not found:
        return None
    how = "sniffed" if source.sniffed else "given"
    return (f"the header reads as one column {show(header[0])} with the delimiter {delimiter_option(used)} "
            f"({how}): if the delimiter is {delimiter_option(found[0])}, pass --delimiter "
            f"{delimiter_option(found[0])}")


def scan_manifest(
    path: Path | str,
    *,
    display_name: str | None = None,
    default_datastore_id: str | None = None,
    batch_size: int = 10_000,
    delimiter: str | None = None,
    extra_columns: Literal["error", "ignore"] = "error",
    max_errors: int = 1000,
) -> ManifestScan:
    """Open a manifest for one pass: iterate the result for the valid rows, then read
    its `report`.

    Opening reads the header (and, for CSV, the first block of the file): it raises
    FileNotFoundError for a missing file and ManifestInvalid when the file cannot be
    read as a manifest at all (unknown format, not CSV text or not Parquet, no header,
    a required column missing, a column named twice, a first row longer than the
    header). Iterating yields lists of valid CopySpec of at most `batch_size` rows, in
    manifest order; rows with problems are left out and their problems collected
    (`errors`, up to `max_errors`, the rest counted). A file that becomes unreadable
    part-way (a truncated .csv.gz, bytes that are not UTF-8) ends the iteration with
    that problem recorded; nothing is raised. Once the iteration is exhausted, the
    rules that span rows have run and `report` is the ValidationReport (`ok` only if
    nothing at all was found). A scan reads its file once.

    delimiter: CSV only; None sniffs it from the header line among , ; tab and |; an
    explicit one (one character; "tab" for a tab) wins.
    extra_columns: "error" (an unknown column is a problem, with a "did you mean");
    "ignore" (columns of your own are allowed and carried per row in CopySpec.extras
    as a compact JSON object column -> text; unnamed columns are skipped; a name very
    close to a known column is still a problem, as a likely typo).
    """
    return ManifestScan(Path(path), display_name=display_name, default_datastore_id=default_datastore_id,
                        batch_size=batch_size, delimiter=delimiter, extra_columns=extra_columns,
                        max_errors=max_errors)


def read_specs(
    path: Path,
    *,
    display_name: str | None = None,
    default_datastore_id: str | None = None,
    batch_size: int = 10_000,
    delimiter: str | None = None,
    extra_columns: Literal["error", "ignore"] = "error",
) -> Iterator[list[CopySpec]]:
    """Yield the manifest's rows as CopySpec batches (manifest order).

    Raises FileNotFoundError if the file is missing, ManifestInvalid for a bad header
    (before yielding anything), for the first batch holding a bad row (all errors of
    that batch), for a file unreadable from some point on, or, at the end, for a
    manifest without rows. Cross-row rules are `validate`'s (and the scan's) job.
    """
    scan = scan_manifest(path, display_name=display_name, default_datastore_id=default_datastore_id,
                         batch_size=batch_size, delimiter=delimiter, extra_columns=extra_columns)
    if scan.errors:
        raise ManifestInvalid(scan.errors)
    for specs, errors in scan._chunks():
        if errors:
            raise ManifestInvalid(errors)
        if specs:
            yield specs
    if scan.rows == 0:
        raise ManifestInvalid([ManifestError(scan.display, None, None, "the manifest has no rows")])


def validate(
    path: Path,
    *,
    display_name: str | None = None,
    default_datastore_id: str | None = None,
    max_errors: int = 1000,
    batch_size: int = 10_000,
    delimiter: str | None = None,
    extra_columns: Literal["error", "ignore"] = "error",
) -> ValidationReport:
    """One full pass (`scan_manifest(...).finish()`): per-row and cross-row rules.

    Returns every problem (up to `max_errors`, the rest counted in `more_errors`).
    Raises FileNotFoundError for a missing file and ManifestInvalid when the file
    cannot be read as a manifest at all (see scan_manifest). Unknown columns are
    reported, and the rows are still checked. Cross-row rules only see rows that
    passed the row rules.
    """
    return scan_manifest(path, display_name=display_name, default_datastore_id=default_datastore_id,
                         batch_size=batch_size, delimiter=delimiter, extra_columns=extra_columns,
                         max_errors=max_errors).finish()
