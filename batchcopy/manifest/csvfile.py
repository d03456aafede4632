"""CSV manifests (.csv, .csv.gz): pyarrow's streaming CSV reader, every cell as text.

- Bytes: gzip is recognised by its magic bytes (a ``.gz`` name without them is an
  error); UTF-8, with or without BOM. UTF-16/32 text, binary data, a Parquet file or a
  ZIP archive (an Excel workbook) under a .csv name are named as such.
- Delimiter: the one given, else sniffed from the header line among , ; tab and |
  (the most frequent outside quotes; a comma when none occurs).
- Header: the first line, parsed here; the reader then gets positional column names,
  so duplicate or empty names are manifest/scan.py's to report, not pyarrow's.
- Records: no type or NA inference, no nulls; quoted cells may span lines; a record
  must fit in one read block (BLOCK_BYTES). A record with fewer cells than the header
  is padded with empty cells; a longer one, or one whose quote never closes, is
  flagged (RawBatch.broken). pyarrow reads a blank line as a record of empty cells: in a
  large batch such records are counted (for the lines of the ones after them) and dropped
  before any cell becomes a Python object, so blank lines cost no memory; a few in a small
  batch reach manifest/scan.py, which skips records of empty cells.
- Lines: the file line each record starts on, exact: line breaks inside quoted cells
  are counted.
"""

from __future__ import annotations

import csv
import io
import sys
from collections import deque
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

from batchcopy.manifest.source import (
    SMALL_BATCH,
    RawBatch,
    SourceError,
    first_invalid_utf8,
    line_breaks,
    one_line,
    suspect_records,
)

HEAD_BYTES = 1 << 16  # read before the reader starts: header, delimiter, first record, file kind
BLOCK_BYTES = 2 << 20  # pyarrow's read block; a record must fit in one
DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t"}
_SAVE_AS_UTF8 = "save it as UTF-8 (in Excel: Save As 'CSV UTF-8')"
_MAGIC = (
    (b"\xff\xfe\x00\x00", f"is UTF-32 text: {_SAVE_AS_UTF8}"),
    (b"\x00\x00\xfe\xff", f"is UTF-32 text: {_SAVE_AS_UTF8}"),
    (b"\xff\xfe", f"is UTF-16 text: {_SAVE_AS_UTF8}"),
    (b"\xfe\xff", f"is UTF-16 text: {_SAVE_AS_UTF8}"),
    (b"PAR1", "is a Parquet file, not CSV text: name it .parquet"),
    (b"PK\x03\x04", "is a ZIP archive (an Excel workbook?), not CSV text: save it as 'CSV UTF-8'"),
    (b"\x1f\x8b", "is gzip-compressed twice"),
)
_CONTROL_BYTES = bytes(range(0x00, 0x09)) + bytes(range(0x0E, 0x20))


def delimiter_option(delimiter: str) -> str:
    """How to write `delimiter` on the command line."""
    return "tab" if delimiter == "\t" else repr(delimiter)


def check_delimiter(delimiter: str) -> str:
    """A usable delimiter ('tab' and backslash-t mean a tab), or ValueError."""
    value = _DELIMITER_ALIASES.get(delimiter.lower(), delimiter)
    if len(value) != 1 or value in "\"\r\n" or value.isalnum():
        raise ValueError(f"a delimiter is one character, not a quote, letter, digit or line break: {delimiter!r}")
    return value


def sniff_delimiter(line: str) -> str:
    """The candidate occurring most often outside quotes in `line` (a comma on a tie or none)."""
    outside = "".join(part for i, part in enumerate(line.split('"')) if i % 2 == 0)
    counts = [outside.count(d) for d in DELIMITERS]
    return DELIMITERS[counts.index(max(counts))] if max(counts) else ","


class CsvSource:
    """The header and the records of one CSV file; `batches()` reads it once."""

    def __init__(self, path: Path, delimiter: str | None) -> None:
        self.path = path
        self.compression = self._compression()
        head = self._head()
        text, first_line = self._head_text(head)
        self.sniffed = delimiter is None
        self.delimiter = sniff_delimiter(first_line) if delimiter is None else check_delimiter(delimiter)
        records = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter)  # CR, LF or CRLF
        try:
            header = next(records, [])
        except csv.Error as exc:
            raise SourceError(f"cannot read the header: {exc}", line=1) from None
        if records.line_num > 1:
            raise SourceError("the header spans lines (a quote in it is never closed?)", line=1)
        self.header = [name.strip() for name in header]
        self.first_record = _first_record(records)

    # ---------------------------------------------------------------- the head

    def _compression(self) -> str | None:
        with open(self.path, "rb") as fh:
            magic = fh.read(2)
        if not magic:
            raise SourceError("empty file: no header row")
        if magic == b"\x1f\x8b":
            return "gzip"
        if self.path.name.lower().endswith(".gz"):
            raise SourceError("named .gz but not gzip-compressed (no gzip magic bytes)")
        return None

    def _head(self) -> bytes:
        import pyarrow as pa

        try:
            with pa.input_stream(self.path, compression=self.compression) as stream:
                head = stream.read(HEAD_BYTES)
        except (pa.ArrowException, OSError) as exc:
            raise self.read_error(exc, None) from None
        if not head:
            raise SourceError("empty file: no header row")
        for magic, message in _MAGIC:
            if head.startswith(magic):
                raise SourceError(message)
        return head

    def _head_text(self, head: bytes) -> tuple[str, str]:
        """(the head as text, its first line), or SourceError for what is not CSV text."""
        ends = [i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0]
        end = min(ends) if ends else len(head)
        first = head[:end]
        if max(head[1::2].count(0), head[0::2].count(0)) > len(head) // 4 + 1:
            raise SourceError(f"looks like UTF-16 text (NUL bytes between the characters): {_SAVE_AS_UTF8}")
        controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
        if len(first.translate(None, _CONTROL_BYTES)) != len(first) or controls > len(head) // 10:
            raise SourceError("binary data (control bytes), not CSV text")
        if not ends and len(head) == HEAD_BYTES:
            raise SourceError(f"no line break in the first {HEAD_BYTES // 1024} KiB: not a CSV file")
        try:
            first_line = first.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SourceError(f"the header is not UTF-8 text (byte 0x{first[exc.start]:02x}): {_SAVE_AS_UTF8}",
                              line=1) from None
        if not first_line.strip():
            raise SourceError("no header: the first line is empty")
        # the rest may end inside a character or hold bytes that are not UTF-8: the
        # reader locates those; here they only need to keep the cell count
        return head.decode("utf-8-sig", errors="replace"), first_line

    # ---------------------------------------------------------------- the records

    def batches(self) -> Iterator[RawBatch]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        names = [f"c{i}" for i in range(len(self.header))]
        pending: deque[tuple[int, str, int]] = deque()  # (record number, text, cells) of bad-length records

        def on_invalid(row: Any) -> str:
            pending.append((row.number or 0, row.text, row.actual_columns))
            return "skip"

        walk = _Walk(self, pending)
        claim = _UndecodableRecords(on_invalid)
        try:
            stream = pa.input_stream(self.path, compression=self.compression)
        except (pa.ArrowException, OSError) as exc:
            raise self.read_error(exc, None) from None
        reader = None
        try:
            with claim:
                reader = pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=False,
                                                   block_size=BLOCK_BYTES),
                    parse_options=pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True,
                                                     ignore_empty_lines=False, invalid_row_handler=on_invalid),
                    convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                         check_utf8=False, strings_can_be_null=False,
                                                         quoted_strings_can_be_null=False))
            while True:
                try:
                    with claim:
                        batch = reader.read_next_batch()
                except StopIteration:
                    break
                columns = batch.columns
                bad = first_invalid_utf8(columns)
                if bad is not None:
                    columns = [c.slice(0, bad[0]) for c in columns]
                raw = walk.batch(columns, batch.num_rows if bad is None else bad[0])
                if raw.size:
                    yield raw
                if bad is not None:
                    raise SourceError(f"not UTF-8 text ({bad[2]}): the whole file must be UTF-8; "
                                      f"{_SAVE_AS_UTF8}", line=walk.line, column=self.header[bad[1]],
                                      next_row=True)
        except (pa.ArrowException, OSError) as exc:
            if claim.seen:
                raise SourceError(f"a record at or after line {walk.line} is not UTF-8 text: the whole file "
                                  f"must be UTF-8; {_SAVE_AS_UTF8}") from None
            raise self.read_error(exc, walk.line) from None
        finally:
            if reader is not None:  # join its read-ahead thread now, not at interpreter exit
                reader.close()
            stream.close()
        raw = walk.rest()
        if raw.size:
            yield raw

    def read_error(self, exc: BaseException, line: int | None) -> SourceError:
        text = one_line(str(exc))
        if "Truncated compressed stream" in text:
            return SourceError("the gzip data ends early: the file is truncated")
        if "zlib" in text or "gzip" in text.lower():
            return SourceError(f"the gzip data is corrupt ({text.split(': ', 1)[-1]})")
        if "straddling" in text:
            return SourceError(f"a record at or after line {line} is too long to read (records of up to "
                               f"{BLOCK_BYTES >> 20} MiB are; is a quote never closed?)")
        where = f" after line {line}" if line is not None else ""
        return SourceError(f"cannot read the file{where}: {text}")

    def cells_of(self, text: str, count: int) -> tuple[list[str], str | None]:
        """The cells of one record of the wrong length, from its text, and what is wrong
        with it beyond its length (a quote that never closes), if anything."""
        try:
            return next(csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter, strict=True), []), None
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                return [], "a quote in this row is never closed (it runs to the end of the file)"
        try:
            return next(csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter), []), None
        except csv.Error:  # a cell above the csv module's field limit: let pyarrow parse it
            import pyarrow as pa
            import pyarrow.csv as pacsv

            names = [f"c{i}" for i in range(count)]
            table = pacsv.read_csv(
                io.BytesIO(text.encode("utf-8")),
                read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                     strings_can_be_null=False, quoted_strings_can_be_null=False))
            return [table.column(i)[0].as_py() for i in range(count)], None


def _first_record(records: Any) -> tuple[int, int] | None:
    """(cells, line) of the first non-blank record in the head; None if there is none or
    it is unreadable here. A record the head cuts short only reads shorter."""
    line = records.line_num + 1
    try:
        for record in records:
            if any(cell.strip() for cell in record):
                return len(record), line
            line = records.line_num + 1
    except csv.Error:  # a cell above the csv module's field limit
        return None
    return None


class _Walk:
    """Puts the reader's records and the bad-length ones back in file order, with lines."""

    def __init__(self, source: CsvSource, pending: deque[tuple[int, str, int]]) -> None:
        self.source, self.pending = source, pending
        self.width = len(source.header)
        self.record = 2  # pyarrow's number of the next record (the header is 1)
        self.line = 2  # the file line the next record starts on

    def batch(self, columns: list[Any], n: int) -> RawBatch:
        kept = _kept_records(columns, n)
        if kept is not None:  # blank lines: counted below, never turned into Python lists
            columns = [c.take(kept) for c in columns]
        lists = [c.to_pylist() for c in columns]
        suspect = suspect_records(columns)
        if kept is None and (not self.pending or self.pending[0][0] >= self.record + n):
            # the usual case: no bad-length record among these; lines only move for line breaks
            if suspect:
                steps = [1] * n
                for i in suspect:
                    steps[i] += sum(line_breaks(col[i]) for col in lists)
                lines = [self.line + s for s in accumulate(steps[:-1], initial=0)]
                self.line += sum(steps)
            else:
                lines = list(range(self.line, self.line + n))
                self.line += n
            self.record += n
            raw = RawBatch(lists, lines, set(suspect))
        else:
            raw = RawBatch([[] for _ in range(self.width)], [], set())
            flagged = set(suspect)
            before = -1  # the position (in the reader's batch) of the last record kept
            for i, at in enumerate(range(n) if kept is None else kept.to_pylist()):
                self._blank(raw, at - before - 1)
                before = at
                self._drain(raw)
                for out, col in zip(raw.columns, lists):
                    out.append(col[i])
                self._append_line(raw, 1 + (sum(line_breaks(col[i]) for col in lists) if i in flagged else 0),
                                  suspect=i in flagged)
                self.record += 1
            self._blank(raw, n - before - 1)
        self._drain(raw)  # bad-length records right after the last one
        return raw

    def _blank(self, raw: RawBatch, count: int) -> None:
        """Step over `count` blank lines (one line each), the bad-length records among
        them in their places."""
        while count > 0:
            self._drain(raw)
            step = count if not self.pending else min(count, max(1, self.pending[0][0] - self.record))
            self.record += step
            self.line += step
            count -= step

    def rest(self) -> RawBatch:
        raw = RawBatch([[] for _ in range(self.width)], [], set())
        self._drain(raw, everything=True)
        return raw

    def _append_line(self, raw: RawBatch, spans: int, *, suspect: bool) -> None:
        assert raw.lines is not None
        if suspect:
            raw.suspect.add(len(raw.lines))
        raw.lines.append(self.line)
        self.line += spans

    def _drain(self, raw: RawBatch, everything: bool = False) -> None:
        """Append the pending bad-length records that come next in the file (all if everything)."""
        while self.pending and (everything or self.pending[0][0] <= self.record):
            _, text, count = self.pending.popleft()
            cells, broken = self.source.cells_of(text, count)
            if broken is None and len(cells) > self.width and any(c.strip() for c in cells):
                broken = f"{len(cells)} cells, but the header has {self.width} columns"
            if broken is not None:
                raw.broken[len(raw.columns[0])] = broken
            cells = (cells + [""] * self.width)[:self.width]  # padded; a long one's cells go unread
            for out, cell in zip(raw.columns, cells):
                out.append(cell)
            self._append_line(raw, 1 + line_breaks(text), suspect=True)
            self.record += 1


def _kept_records(columns: list[Any], n: int) -> Any:
    """The positions of the records that are not blank lines (every cell empty), as an
    Arrow array, or None when every record is kept (or the batch is small: a few blank
    records are left to manifest/scan.py, which skips records of empty cells)."""
    if n <= SMALL_BATCH or not columns:
        return None
    import pyarrow.compute as pc

    total = None
    for column in columns:
        size = pc.binary_length(column)
        total = size if total is None else pc.add(total, size)
    filled = pc.greater(total, 0)
    if pc.all(filled).as_py():
        return None
    return pc.indices_nonzero(filled)


class _UndecodableRecords:
    """pyarrow decodes a bad-length record's text for the handler strictly; on bytes that
    are not UTF-8 the handler is never called, the error goes to sys.unraisablehook (a
    printed traceback) and the read fails. Around each call into the reader, claim
    exactly those errors (`seen`) and pass on every other."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.seen = False

    def __enter__(self) -> None:
        self.previous = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            if unraisable.object is self.handler and isinstance(unraisable.exc_value, UnicodeDecodeError):
                self.seen = True
            else:
                self.previous(unraisable)

        sys.unraisablehook = hook

    def __exit__(self, *exc: object) -> None:
        sys.unraisablehook = self.previous
