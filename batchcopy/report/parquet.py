"""The run's Parquet report file, one row per manifest row (report/rows.py's `RowResult`):
its schema and metadata, `ReportWriter` / `write_report` to write one (streamed a row group
at a time, atomically via `<path>.tmp`, to a local path or an `s3://` URL), and
`read_report`, `iter_report_rows` and `report_counts` to read one back. Timestamps are
stored as UTC milliseconds (sub-millisecond precision floored on write). pyarrow and pandas
are imported inside the functions that use them, so importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchcopy.report.files import fsync_dir, fsync_file, is_s3, s3_basename, tmp_path
from batchcopy.report.rows import (COLUMN_SPECS, REPORT_COLUMNS, TIMESTAMP_COLUMNS, ReportCounts,
                                   RowResult, to_utc)

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import pyarrow

# 2: run_id, queue_wait_s, copy_duration_s, extras; the run's context in the file metadata.
# 3: detection_delay_s; copy_duration_s is the service's own (its start and end updatedAt)
# where it gave them, else sent_at -> finished_at as before.
# Readers take formats 1 and 2 too (the new columns are derived from the timestamps or left
# empty).
REPORT_FORMAT_VERSION = "3"
VERSION_KEY = "batchcopy.report_version"
RUN_KEY = "batchcopy.run"  # JSON: run id, options, package versions, copy rate (may be absent)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_MANIFEST_SUFFIXES = (".csv.gz", ".csv", ".parquet", ".pq")


def report_schema(run: dict[str, Any] | None = None) -> pyarrow.Schema:
    """The report's explicit Arrow schema (column order = REPORT_COLUMNS). `run` (the run's
    context: run id, options, versions...) is stored as JSON in the file's metadata."""
    import json

    import pyarrow as pa

    types = {
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("ms", tz="UTC"),
    }
    return pa.schema(
        [pa.field(name, types[kind], nullable=nullable) for name, kind, nullable in COLUMN_SPECS],
        metadata={VERSION_KEY: REPORT_FORMAT_VERSION,
                  **({RUN_KEY: json.dumps(run, default=str, sort_keys=True)} if run else {})},
    )


def report_metadata(path: Path | str) -> dict[str, Any]:
    """{"report_version": "1" | "2" | ..., "run": {...} or None} of a local report."""
    import json

    import pyarrow.parquet as pq

    meta = pq.read_schema(str(path)).metadata or {}
    version = meta.get(VERSION_KEY.encode(), b"1").decode()
    run = meta.get(RUN_KEY.encode())
    return {"report_version": version, "run": json.loads(run) if run else None}


def _epoch_ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    return (value - _EPOCH) // _ONE_MS


class ReportWriter:
    """Streams RowResults into a Parquet report, one row group per `row_group_rows` rows.

    Writes `<path>.tmp`, renamed onto `path` by `close()` (atomic; fsynced first).
    `abort()` (or an exception leaving a `with` block) removes the `.tmp` and leaves
    `path` untouched. Parent directories are created. Not thread-safe; call from one
    thread. Counts by status and error code are kept as rows go by.
    """

    def __init__(self, path: Path | str, *, row_group_rows: int = 10_000,
                 run: dict[str, Any] | None = None) -> None:
        import pyarrow.parquet as pq

        if row_group_rows < 1:
            raise ValueError("row_group_rows must be >= 1")
        self.path = Path(path)
        self.tmp_path = tmp_path(self.path)
        self.row_group_rows = row_group_rows
        self._schema = report_schema(run)
        self._buffer: list[RowResult] = []
        self._counts = ReportCounts()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(
            str(self.tmp_path), self._schema, compression="zstd", use_dictionary=True
        )

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def counts(self) -> ReportCounts:
        """Counts so far (rows handed to write, buffered or not)."""
        return self._counts

    def write(self, rows: Iterable[RowResult]) -> None:
        if self._closed:
            raise ValueError("ReportWriter is closed")
        for row in rows:
            if not isinstance(row, RowResult):
                raise TypeError(f"expected RowResult, got {type(row).__name__}")
            self._buffer.append(row)
            self._counts.add(row)
            if len(self._buffer) >= self.row_group_rows:
                self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        import pyarrow as pa

        rows = self._buffer
        arrays = []
        for f in self._schema:
            name = f.name
            if name in TIMESTAMP_COLUMNS:
                values: list[Any] = [_epoch_ms(getattr(r, name)) for r in rows]
            elif name == "status":
                values = [r.status.value for r in rows]
            else:
                values = [getattr(r, name) for r in rows]
            arrays.append(pa.array(values, type=f.type))
        table = pa.Table.from_arrays(arrays, schema=self._schema)
        self._writer.write_table(table, row_group_size=len(rows))
        self._buffer = []

    def close(self) -> ReportCounts:
        """Flush, finish the file and rename it onto `path`. Returns the counts."""
        if self._closed:
            return self._counts.sorted()
        try:
            self._flush()
            self._writer.close()
            fsync_file(self.tmp_path)
            os.replace(self.tmp_path, self.path)
            fsync_dir(self.path.parent)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self._counts.sorted()

    def abort(self) -> None:
        """Drop everything written so far: the `.tmp` is removed, `path` is untouched."""
        self._closed = True
        self._buffer = []
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass
        self.tmp_path.unlink(missing_ok=True)


class ReportUploadError(Exception):
    """The report was written locally but could not be uploaded; `local_path` keeps it."""

    def __init__(self, local_path: Path, url: str, cause: BaseException) -> None:
        super().__init__(f"could not upload the report to {url} ({cause}); kept at {local_path}")
        self.local_path = local_path
        self.url = url


async def write_report(
    rows: Iterable[RowResult],
    destination: str | Path,
    *,
    tmp_dir: Path | None = None,
    row_group_rows: int = 10_000,
    run: dict[str, Any] | None = None,
) -> ReportCounts:
    """Write the report to a local path (parents created, atomic) or an s3:// URL.

    For s3 the file is written under `tmp_dir` (default: a fresh temporary directory),
    uploaded with `batchcopy.storage.upload`, then deleted. If the upload fails the local
    file is kept and ReportUploadError (with `.local_path`) is raised, so a long run's
    report is never lost to an S3 hiccup.

    `rows` is consumed on the calling thread (a sqlite3 cursor from the journal is fine);
    the Parquet encoding runs inline too, so this blocks the event loop while it writes
    (about a second per few hundred thousand rows). To keep the loop free, run
    `ReportWriter` in a thread with rows that are safe to read from that thread.
    `run` (the run's context) goes into the file's metadata (see report_schema).
    """
    dest = str(destination)
    if not is_s3(dest):
        with ReportWriter(Path(dest), row_group_rows=row_group_rows, run=run) as writer:
            writer.write(rows)
            return writer.close()

    from batchcopy.aws import storage

    made_dir = tmp_dir is None
    if tmp_dir is None:
        staging_dir = Path(tempfile.mkdtemp(prefix="batchcopy-report-"))
    else:
        staging_dir = Path(tmp_dir)
    local = staging_dir / s3_basename(dest)
    try:
        with ReportWriter(local, row_group_rows=row_group_rows, run=run) as writer:
            writer.write(rows)
            counts = writer.close()
    except BaseException:
        if made_dir:
            shutil.rmtree(staging_dir, ignore_errors=True)
        raise
    try:
        await storage.upload(local, dest)
    except Exception as exc:
        raise ReportUploadError(local, dest, exc) from exc
    local.unlink(missing_ok=True)
    if made_dir:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return counts


def default_report_path(
    manifest: str | Path, reports_dir: Path = Path("reports"), *, now: datetime | None = None
) -> Path:
    """reports/<manifest stem>-<UTC yyyymmddThhmmssZ>.parquet.

    The stem drops .csv.gz/.csv/.parquet/.pq; works for s3:// manifests (last key part).
    Two runs of one manifest in the same second get the same name.
    """
    name = str(manifest).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    stem = name
    for suffix in _MANIFEST_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = stem or "manifest"
    when = to_utc(now if now is not None else datetime.now(timezone.utc))
    assert when is not None
    return Path(reports_dir) / f"{stem}-{when:%Y%m%dT%H%M%SZ}.parquet"


async def _local_copy(source: str, dest_dir: Path) -> Path:
    from batchcopy.aws import storage

    return await storage.download(source, dest_dir)


def read_report(source: str | Path) -> pandas.DataFrame:
    """The whole report as a DataFrame (local path or s3://; s3 is downloaded to a
    temporary directory first). For s3 this runs its own event loop: call it from
    synchronous code (or wrap it in asyncio.to_thread from async code).

    Types: strings (pandas str dtype), int64/int32, bool, datetime64[ms, UTC]."""
    import pandas as pd

    src = str(source)
    if not is_s3(src):
        return pd.read_parquet(src, engine="pyarrow")
    staging = Path(tempfile.mkdtemp(prefix="batchcopy-read-"))
    try:
        local = asyncio.run(_local_copy(src, staging))
        return pd.read_parquet(local, engine="pyarrow")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def iter_report_rows(path: Path | str, *, batch_size: int = 10_000) -> Iterator[RowResult]:
    """Stream a local report back as RowResults, a record batch at a time.

    Columns missing from an older report take the RowResult defaults; unknown extra
    columns are ignored."""
    import pyarrow.parquet as pq

    import pyarrow as pa

    pf = pq.ParquetFile(str(path))
    present = [c for c in REPORT_COLUMNS if c in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=batch_size, columns=present):
        columns: list[list[Any]] = []
        for name in present:
            array = batch.column(name)
            if name in TIMESTAMP_COLUMNS:
                # via int64: much faster than letting pyarrow build zone-aware datetimes
                millis = array.cast(pa.int64()).to_pylist()
                columns.append([None if v is None else _EPOCH + v * _ONE_MS for v in millis])
            else:
                columns.append(array.to_pylist())
        for values in zip(*columns):
            yield RowResult(**dict(zip(present, values)))


def report_counts(path: Path | str) -> ReportCounts:
    """Counts of a local report, streamed (reads only the status and error_code columns)."""
    import pyarrow.parquet as pq

    counts = ReportCounts()
    pf = pq.ParquetFile(str(path))
    for batch in pf.iter_batches(batch_size=65_536, columns=["status", "error_code"]):
        data = batch.to_pydict()
        for status, code in zip(data["status"], data["error_code"]):
            counts.rows += 1
            counts.by_status[status] = counts.by_status.get(status, 0) + 1
            if code:
                counts.by_error_code[code] = counts.by_error_code.get(code, 0) + 1
    return counts.sorted()
