"""The retry manifest: `write_failed_manifest` writes the report rows still to do (by
default the statuses in `RETRY_STATUSES`) as a CSV in the manifest's own columns
(`FAILED_MANIFEST_COLUMNS`), ready for `batchcopy run`. No pyarrow or pandas is imported
here.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from batchcopy.report.files import fsync_file, tmp_path
from batchcopy.report.parquet import RowResult
from batchcopy.core.specs import Status
from batchcopy.manifest.rules import BOOL_COLUMNS, TEXT_COLUMNS

# Columns of a retry manifest (write_failed_manifest), in the manifest's own names.
FAILED_MANIFEST_COLUMNS: tuple[str, ...] = tuple(
    c for c in TEXT_COLUMNS + BOOL_COLUMNS if c not in ("series_instance_uid", "sop_instance_uid"))

RETRY_STATUSES: tuple[str, ...] = ("FAILED", "CONFLICT", "UNKNOWN", "NOT_RUN")


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
) -> int:
    """Write a retry manifest: the rows whose status is in `statuses`, as a CSV in the
    manifest's own column format (FAILED_MANIFEST_COLUMNS), ready for `batchcopy run`.
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
        with fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(FAILED_MANIFEST_COLUMNS)
            for row in rows:
                if row.status.value not in wanted:
                    continue
                spec = row.to_spec(keep_versions=keep_versions)
                writer.writerow([_csv_cell(getattr(spec, c)) for c in FAILED_MANIFEST_COLUMNS])
                written += 1
        fsync_file(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written
