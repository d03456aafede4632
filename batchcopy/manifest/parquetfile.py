"""Parquet manifests (.parquet, .pq): pyarrow record batches, columns as typed.

Columns may be typed (bool or 0/1 ints for the flags, ints for versions and row_id;
manifest/cells.py says what each column takes). Text cells get the same checks as CSV
cells (UTF-8, control characters). A file that is not Parquet, or is cut short, or
whose data cannot be decoded is a SourceError, never a pyarrow exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchcopy.manifest.source import RawBatch, SourceError, first_invalid_utf8, one_line, suspect_records

_MAGIC = b"PAR1"


class ParquetSource:
    """The header (schema names) and the records of one Parquet file."""

    def __init__(self, path: Path, batch_size: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path, self.batch_size = path, batch_size
        try:
            self._file = pq.ParquetFile(path)
            self.header = list(self._file.schema_arrow.names)
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(self._why_not_parquet(exc)) from None
        self.rows_read = 0

    def _why_not_parquet(self, exc: BaseException) -> str:
        with open(self.path, "rb") as fh:
            head = fh.read(4096)
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 4))
            tail = fh.read(4)
        if size == 0:
            return "empty file: not a Parquet file"
        if head.startswith(_MAGIC) and tail != _MAGIC:
            return "a truncated Parquet file (its footer is missing)"
        if not head.startswith(_MAGIC):
            try:
                head.decode("utf-8")
                looks_text = b"\x00" not in head
            except UnicodeDecodeError:
                looks_text = False
            if looks_text:
                return "not a Parquet file (it reads as text: a CSV file should be named .csv)"
            return "not a Parquet file (no Parquet magic bytes)"
        return f"a corrupt Parquet file ({one_line(str(exc))})"

    def batches(self) -> Iterator[RawBatch]:
        import pyarrow as pa

        try:
            for batch in self._file.iter_batches(batch_size=self.batch_size):
                # dictionary-encoded text (a pandas categorical, say) gets the text checks too
                columns = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns]
                bad = first_invalid_utf8(columns)
                if bad is not None:
                    columns = [c.slice(0, bad[0]) for c in columns]
                raw = RawBatch([_pylist(c) for c in columns], None, set(suspect_records(columns)))
                self.rows_read += raw.size
                if raw.size:
                    yield raw
                if bad is not None:
                    raise SourceError(f"not UTF-8 text ({bad[2]}): Parquet text must be UTF-8",
                                      column=self.header[bad[1]], next_row=True)
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"a corrupt Parquet file: cannot read past record {self.rows_read} "
                              f"({one_line(str(exc))})") from None
        finally:
            self._file.close()


def _pylist(array: Any) -> list[Any]:
    try:
        result: list[Any] = array.to_pylist()
        return result
    except (ValueError, OverflowError) as exc:  # e.g. a date out of Python's range
        raise SourceError(f"a column of type {array.type} holds a value Python cannot read ({exc})") from None
