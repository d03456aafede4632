"""The manifest `batchcopy select` writes: CSV (.csv, .csv.gz) or Parquet (.parquet, .pq),
local or s3://, in the manifest columns `run`, `validate` and `plan` read (query/rows.py
COLUMNS), every cell text. Rows are written as they come to a file beside the
destination (or in a temporary folder for s3://), which takes the destination's name only
once complete: a select stopped half-way leaves no half manifest behind (the destination
is checked first: aws/preflight.py check_manifest_destination).
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from batchcopy.query.rows import COLUMNS

_BATCH = 10_000


class ManifestWriter:
    """Rows in, one manifest out: `write(rows)` as they come, `finish()` to publish it
    (None when no row was written: nothing is published), `abort()` to drop it."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.rows = 0
        self._s3 = out.lower().startswith("s3://")
        self._parquet = out.lower().endswith((".parquet", ".pq"))
        name = out.rstrip("/").rsplit("/", 1)[-1]
        if self._s3:
            self._dir = Path(tempfile.mkdtemp(prefix="batchcopy-select-"))
            self.local = self._dir / name
        else:
            self.local = Path(out).expanduser()
            self.local.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.local.with_name(f".{self.local.name}.part")
        self._pending: list[dict[str, str]] = []
        self._pq: Any = None
        self._fh: Any = None
        self._csv: Any = None
        if not self._parquet:
            opener = gzip.open if name.lower().endswith(".gz") else open
            self._fh = opener(self._tmp, "wt", encoding="utf-8", newline="")
            self._csv = csv.writer(self._fh, lineterminator="\n")
            self._csv.writerow(COLUMNS)

    def write(self, rows: list[dict[str, str]]) -> None:
        self.rows += len(rows)
        if self._csv is not None:
            self._csv.writerows([row.get(c, "") for c in COLUMNS] for row in rows)
            return
        self._pending.extend(rows)
        if len(self._pending) >= _BATCH:
            self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        table = pa.table({c: pa.array([r.get(c, "") for r in self._pending], pa.string())
                          for c in COLUMNS})
        if self._pq is None:
            self._pq = pq.ParquetWriter(self._tmp, table.schema)
        self._pq.write_table(table)
        self._pending = []

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._parquet:
            self._flush_parquet()
            if self._pq is not None:
                self._pq.close()
                self._pq = None

    async def finish(self) -> str | None:
        """Publish the manifest at `out`; None (nothing published) when it has no row."""
        self._close()
        try:
            if not self.rows:
                return None
            os.replace(self._tmp, self.local)
            if self._s3:
                from batchcopy.aws import storage

                await storage.upload(self.local, self.out)
            return self.out
        finally:
            self._tmp.unlink(missing_ok=True)
            if self._s3:
                shutil.rmtree(self._dir, ignore_errors=True)

    def abort(self) -> None:
        self._close()
        self._tmp.unlink(missing_ok=True)
        if self._s3:
            shutil.rmtree(self._dir, ignore_errors=True)
