"""The run's Parquet report, one row per manifest row: `RowResult` and the file's schema,
`ReportWriter` / `write_report` to write one (streamed a row group at a time, atomically
via `<path>.tmp`, to a local path or an `s3://` URL), and `read_report`,
`iter_report_rows` and `report_counts` to read one back. Timestamps are stored as UTC
milliseconds (sub-millisecond precision floored on write). pyarrow and pandas are
imported inside the functions that use them, so importing this module (e.g. for
`RowResult`) stays cheap.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchcopy.core.specs import TERMINAL_DONE, CopySpec, Status
from batchcopy.report.files import fsync_dir, fsync_file, is_s3, s3_basename, tmp_path

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import pyarrow

# (name, arrow type key, nullable). The single source of the column order and types.
_COLUMN_SPECS: tuple[tuple[str, str, bool], ...] = (
    ("manifest_row", "int64", False),
    ("row_id", "string", False),
    ("status", "string", False),
    ("datastore_id", "string", True),
    ("source_image_set_id", "string", True),
    ("destination_image_set_id", "string", True),
    ("source_version_id", "string", True),
    ("destination_version_id", "string", True),
    ("copiable_attributes", "string", True),
    ("force", "bool", False),
    ("promote_to_primary", "bool", False),
    ("source_version_used", "string", True),
    ("destination_version_used", "string", True),
    ("result_image_set_id", "string", True),
    ("result_version_id", "string", True),
    ("workflow_status", "string", True),
    ("error_code", "string", True),
    ("error_message", "string", True),
    ("attempts", "int32", False),
    ("throttles", "int32", False),
    ("conflicts", "int32", False),
    ("call_id", "string", True),
    ("call_rows", "int32", False),
    ("started_at", "timestamp", True),
    ("sent_at", "timestamp", True),
    ("finished_at", "timestamp", True),
    ("evidence", "string", True),
    # format 2: the run that gave the row its status, durations, the manifest's extra columns
    ("run_id", "int64", True),
    ("queue_wait_s", "float64", True),
    ("copy_duration_s", "float64", True),
    ("extras", "string", True),
    # format 3: how long after a copy's end the run saw it
    ("detection_delay_s", "float64", True),
)

REPORT_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _COLUMN_SPECS)

# The requested-spec columns, filled by RowResult.from_spec.
SPEC_COLUMNS: tuple[str, ...] = (
    "manifest_row",
    "row_id",
    "datastore_id",
    "source_image_set_id",
    "destination_image_set_id",
    "source_version_id",
    "destination_version_id",
    "copiable_attributes",
    "force",
    "promote_to_primary",
    "extras",
)

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
_TIMESTAMP_COLUMNS = frozenset(n for n, t, _ in _COLUMN_SPECS if t == "timestamp")
_INT_COLUMNS = frozenset(n for n, t, _ in _COLUMN_SPECS if t in ("int32", "int64"))
_FLOAT_COLUMNS = frozenset(n for n, t, _ in _COLUMN_SPECS if t == "float64")
_UNDERIVED = ("detection_delay_s",)  # a number or empty, never derived
_NULLABLE = frozenset(n for n, _, nullable in _COLUMN_SPECS if nullable)
_STRING_COLUMNS = tuple(n for n, t, _ in _COLUMN_SPECS if t == "string" and n != "status")
_COUNTER_COLUMNS = ("attempts", "throttles", "conflicts", "call_rows")
_BOOL_COLUMNS = frozenset(n for n, t, _ in _COLUMN_SPECS if t == "bool")
_MANIFEST_SUFFIXES = (".csv.gz", ".csv", ".parquet", ".pq")
# duration column: (from, to) timestamps it is derived from
_DURATIONS = {"queue_wait_s": ("started_at", "sent_at"),
              "copy_duration_s": ("sent_at", "finished_at")}


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
        [pa.field(name, types[kind], nullable=nullable) for name, kind, nullable in _COLUMN_SPECS],
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


def to_utc(value: datetime | float | int | str | None) -> datetime | None:
    """Normalise a timestamp to an aware UTC datetime (naive datetimes are taken as UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    if isinstance(value, bool):
        raise TypeError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        return to_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    raise TypeError(f"not a timestamp: {value!r}")


@dataclass(frozen=True, slots=True)
class RowResult:
    """One report row: what a manifest row asked for, what was sent, what came of it.

    Requested columns (from the manifest): manifest_row .. promote_to_primary.
    `destination_image_set_id` None = copy into a new image set; `copiable_attributes`
    None = the whole source image set. `*_version_used` are the versions the
    CopyImageSet call actually named (after chaining / refresh). `result_*` are the
    image set and version the copy wrote (the new image set for copies without a
    destination). `call_id` names the CopyImageSet call that carried the row (rows merged
    into one call share it); `call_rows` is how many rows that call carried (0 = no call).
    `evidence` explains an UNKNOWN status (what reconciliation saw).
    `run_id` is the journal's run that gave the row its status (an earlier run for a row
    SKIPPED as done before). `queue_wait_s` is started_at -> sent_at (reading versions,
    prechecks, waiting for the copy quota and earlier attempts), `copy_duration_s` the
    copy's duration as the service has it (its version's updatedAt at the end less the one
    its CopyImageSet answer gave), or sent_at -> finished_at (the last call until the run
    saw the copy end) where the service's stamps are missing; both are derived from the
    timestamps when not given. `detection_delay_s` is how long after the copy's end the
    run saw it (empty without the service's stamps). `extras` is the manifest's ignored
    extra columns of the row (a JSON object, with --extra-columns ignore).

    The counters (attempts, throttles, conflicts, call_rows) take None as 0; string
    columns take ints too (stored as text: an int version id, a journal's integer call
    id); status takes a Status or its string; timestamps anything `to_utc` takes.
    Other types: TypeError, at construction (not later, when the row group is written).
    """

    manifest_row: int
    row_id: str
    status: Status
    datastore_id: str | None = None
    source_image_set_id: str | None = None
    destination_image_set_id: str | None = None
    source_version_id: str | None = None
    destination_version_id: str | None = None
    copiable_attributes: str | None = None
    force: bool = False
    promote_to_primary: bool = False
    source_version_used: str | None = None
    destination_version_used: str | None = None
    result_image_set_id: str | None = None
    result_version_id: str | None = None
    workflow_status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    throttles: int = 0
    conflicts: int = 0
    call_id: str | None = None
    call_rows: int = 0
    started_at: datetime | None = None
    sent_at: datetime | None = None
    finished_at: datetime | None = None
    evidence: str | None = None
    run_id: int | None = None
    queue_wait_s: float | None = None
    copy_duration_s: float | None = None
    extras: str | None = None
    detection_delay_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            object.__setattr__(self, "status", Status(self.status))
        for name in _COUNTER_COLUMNS:
            if getattr(self, name) is None:  # e.g. a journal column never set: no call, no attempt
                object.__setattr__(self, name, 0)
        for name in _INT_COLUMNS:
            value = getattr(self, name)
            if value is None and name in _NULLABLE:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"RowResult.{name} must be an int, got {value!r}")
        for name in _BOOL_COLUMNS:
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"RowResult.{name} must be a bool, got {getattr(self, name)!r}")
        for name in _STRING_COLUMNS:
            value = getattr(self, name)
            if value is None or isinstance(value, str):
                continue
            if isinstance(value, int) and not isinstance(value, bool):  # e.g. an int version id
                object.__setattr__(self, name, str(value))
            else:
                raise TypeError(f"RowResult.{name} must be a str, got {value!r}")
        if self.row_id is None:
            raise TypeError("RowResult.row_id must be a str, got None")
        for name in _TIMESTAMP_COLUMNS:
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, datetime) and value.tzinfo is timezone.utc
            ):
                object.__setattr__(self, name, to_utc(value))
        for name, (start, end) in _DURATIONS.items():
            value = getattr(self, name)
            if value is None:
                a, b = getattr(self, start), getattr(self, end)
                if a is not None and b is not None:
                    object.__setattr__(self, name, round((b - a).total_seconds(), 3))
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"RowResult.{name} must be a number, got {value!r}")
            else:
                object.__setattr__(self, name, float(value))
        for name in _UNDERIVED:
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"RowResult.{name} must be a number, got {value!r}")
                object.__setattr__(self, name, float(value))

    @classmethod
    def from_spec(cls, spec: CopySpec, status: Status | str, **fields: Any) -> RowResult:
        """A row for `spec`: the requested columns come from the spec, the rest from `fields`.

        Passing a requested column in `fields` is a TypeError (the request is the spec's).
        """
        clash = sorted(set(fields) & set(SPEC_COLUMNS))
        if clash:
            raise TypeError(f"from_spec: {', '.join(clash)} come from the spec, not from fields")
        return cls(
            manifest_row=spec.manifest_row,
            row_id=spec.row_id,
            status=status,  # type: ignore[arg-type]  # coerced in __post_init__
            datastore_id=spec.datastore_id,
            source_image_set_id=spec.source_image_set_id,
            destination_image_set_id=spec.destination_image_set_id,
            source_version_id=spec.source_version_id,
            destination_version_id=spec.destination_version_id,
            copiable_attributes=spec.copiable_attributes,
            force=spec.force,
            promote_to_primary=spec.promote_to_primary,
            extras=spec.extras,
            **fields,
        )

    def to_spec(self, *, keep_versions: bool = True) -> CopySpec:
        """The CopySpec this row requested (versions dropped when keep_versions is False)."""
        return CopySpec(
            manifest_row=self.manifest_row,
            row_id=self.row_id,
            datastore_id=self.datastore_id or "",
            source_image_set_id=self.source_image_set_id or "",
            source_version_id=self.source_version_id if keep_versions else None,
            destination_image_set_id=self.destination_image_set_id,
            destination_version_id=self.destination_version_id if keep_versions else None,
            copiable_attributes=self.copiable_attributes,
            force=self.force,
            promote_to_primary=self.promote_to_primary,
            extras=self.extras,
        )


@dataclass
class ReportCounts:
    """Row counts of one report. `by_status` has every Status (zeros included), in enum
    order; `by_error_code` only the codes seen, most frequent first."""

    rows: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Status})
    by_error_code: dict[str, int] = field(default_factory=dict)

    def add(self, row: RowResult) -> None:
        self.rows += 1
        key = row.status.value
        self.by_status[key] = self.by_status.get(key, 0) + 1
        if row.error_code:
            self.by_error_code[row.error_code] = self.by_error_code.get(row.error_code, 0) + 1

    def sorted(self) -> ReportCounts:
        """A copy with by_error_code ordered by count (descending), then code."""
        codes = dict(sorted(self.by_error_code.items(), key=lambda kv: (-kv[1], kv[0])))
        return ReportCounts(rows=self.rows, by_status=dict(self.by_status), by_error_code=codes)

    @property
    def all_done(self) -> bool:
        """True when every row is SUCCEEDED or SKIPPED (exit code 0 territory)."""
        done = sum(self.by_status.get(s.value, 0) for s in TERMINAL_DONE)
        return done == self.rows

    def as_dict(self) -> dict[str, Any]:
        s = self.sorted()
        return {"rows": s.rows, "by_status": s.by_status, "by_error_code": s.by_error_code}


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
            if name in _TIMESTAMP_COLUMNS:
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
            if name in _TIMESTAMP_COLUMNS:
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
