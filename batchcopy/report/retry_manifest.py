"""The retry manifest: `write_failed_manifest` writes the report rows still to do (by
default the statuses in `RETRY_STATUSES`) as a CSV ready for `batchcopy run`, in the form
of the manifest they came from when the run recorded it (`manifest_form`: its columns, in
its order, and its delimiter): the friendly series/SOP columns stay friendly, the user's
own columns (notes) keep their values; else in `FAILED_MANIFEST_COLUMNS`. No pyarrow or
pandas is imported here.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from batchcopy.report.files import fsync_file, tmp_path
from batchcopy.report.parquet import RowResult
from batchcopy.core.specs import Status
from batchcopy.manifest.rules import BOOL_COLUMNS, TEXT_COLUMNS, series_map

# Columns of a retry manifest (write_failed_manifest), in the manifest's own names.
FAILED_MANIFEST_COLUMNS: tuple[str, ...] = tuple(
    c for c in TEXT_COLUMNS + BOOL_COLUMNS if c not in ("series_instance_uid", "sop_instance_uid"))

RETRY_STATUSES: tuple[str, ...] = ("FAILED", "CONFLICT", "UNKNOWN", "NOT_RUN")


def friendly_cells(attrs: str | None) -> tuple[str, str] | None:
    """copiableAttributes as (series_instance_uid, sop_instance_uid) cells: one instance, one
    whole series, or several whole series (space-separated); None if the subset has another
    shape (several instances, instances of several series) or is the whole image set."""
    if attrs is None:
        return None
    series = series_map(attrs)
    if all(insts is None for insts in series.values()):
        return " ".join(series), ""
    if len(series) == 1:
        ((uid, insts),) = series.items()
        if insts is not None and len(insts) == 1:
            return uid, next(iter(insts))
    return None


def form_columns(form: dict[str, Any] | None) -> list[str]:
    """The retry manifest's columns for a manifest of this form: its own (unnamed ones
    dropped), with row_id and datastore_id added when it had none (the retry must name its
    rows and needs no --datastore-id), and copiable_attributes when it had only the
    friendly columns (a retry row's subset may need the JSON form)."""
    if not form or not form.get("columns"):
        return list(FAILED_MANIFEST_COLUMNS)
    columns = [c for c in form["columns"] if c]
    front = [c for c in ("row_id", "datastore_id") if c not in columns]
    if "series_instance_uid" in columns and "copiable_attributes" not in columns:
        columns.append("copiable_attributes")
    return [*front, *columns]


def _row_cells(spec: Any, columns: list[str]) -> list[str]:
    cells: dict[str, Any] = {c: getattr(spec, c, None) for c in columns
                             if c in TEXT_COLUMNS + BOOL_COLUMNS}
    if "series_instance_uid" in columns:
        friendly = friendly_cells(spec.copiable_attributes)
        if friendly is not None:
            cells["series_instance_uid"], cells["sop_instance_uid"] = friendly
            cells["copiable_attributes"] = None
    own = json.loads(spec.extras) if spec.extras else {}
    return [_csv_cell(cells[c]) if c in cells else _csv_cell(own.get(c)) for c in columns]


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_failed_manifest(
    rows: Iterable[RowResult],
    out_csv: Path | str,
    *,
    statuses: Iterable[Status | str] = RETRY_STATUSES,
    keep_versions: bool = False,
    form: dict[str, Any] | None = None,
) -> int:
    """Write a retry manifest: the rows whose status is in `statuses`, as a CSV ready for
    `batchcopy run`, in the manifest's `form` ({"columns": [...], "delimiter": ";"}, as the
    run recorded it; see form_columns) or, without one, in FAILED_MANIFEST_COLUMNS.
    Returns the number of rows written. `.csv.gz` names are gzip-compressed. The file is
    written atomically (`.tmp` then rename), parents created; rows keep their row_id and
    manifest order.

    Version pins are left EMPTY unless keep_versions=True: the pins of the failed run are
    probably stale (a copy that did happen, another writer, or an earlier row of the same
    chain moved the image set's latest version), and a stale pin only earns a
    ConflictException. Empty versions make the retry resolve the current latest versions.
    Booleans are written as true/false; an empty cell means absent.

    Caveats: UNKNOWN rows are included by default, but their copy may have happened (see
    the report's `evidence`); retrying one without a destination can make a second new
    image set. Rows are retried on their own, so a chain's order with rows that
    succeeded in the failed run is not reproduced.
    """
    wanted = {Status(s).value for s in statuses}
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(out)
    written = 0
    try:
        if out.name.lower().endswith(".gz"):
            fh = gzip.open(tmp, "wt", encoding="utf-8", newline="")
        else:
            fh = open(tmp, "w", encoding="utf-8", newline="")
        columns = form_columns(form)
        with fh:
            writer = csv.writer(fh, lineterminator="\n", delimiter=(form or {}).get("delimiter") or ",")
            writer.writerow(columns)
            for row in rows:
                if row.status.value not in wanted:
                    continue
                writer.writerow(_row_cells(row.to_spec(keep_versions=keep_versions), columns))
                written += 1
        fsync_file(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written
