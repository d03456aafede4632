"""One report row: `RowResult` (what a manifest row asked for, what was sent, what came of
it), the report's columns in order with their types (`COLUMN_SPECS`, the single source of
both; report/parquet.py builds the file's schema from it), `to_utc` for its timestamps, and
`ReportCounts` (rows by status and error code). No pyarrow or pandas here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from batchcopy.core.specs import TERMINAL_DONE, CopySpec, Status

# (name, arrow type key, nullable). The single source of the column order and types.
COLUMN_SPECS: tuple[tuple[str, str, bool], ...] = (
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

REPORT_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in COLUMN_SPECS)

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

TIMESTAMP_COLUMNS = frozenset(n for n, t, _ in COLUMN_SPECS if t == "timestamp")
_INT_COLUMNS = frozenset(n for n, t, _ in COLUMN_SPECS if t in ("int32", "int64"))
_FLOAT_COLUMNS = frozenset(n for n, t, _ in COLUMN_SPECS if t == "float64")
_UNDERIVED = ("detection_delay_s",)  # a number or empty, never derived
_NULLABLE = frozenset(n for n, _, nullable in COLUMN_SPECS if nullable)
_STRING_COLUMNS = tuple(n for n, t, _ in COLUMN_SPECS if t == "string" and n != "status")
_COUNTER_COLUMNS = ("attempts", "throttles", "conflicts", "call_rows")
_BOOL_COLUMNS = frozenset(n for n, t, _ in COLUMN_SPECS if t == "bool")
# duration column: (from, to) timestamps it is derived from
_DURATIONS = {"queue_wait_s": ("started_at", "sent_at"),
              "copy_duration_s": ("sent_at", "finished_at")}



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
        for name in TIMESTAMP_COLUMNS:
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
