"""What `batchcopy select` has read, kept so that a select stopped half-way (Ctrl-C, a
lost connection, kill -9) and run again reads only what it has not read yet.

One SQLite file per data store in the state directory ($BATCHCOPY_STATE_DIR/select/
<data store>.sqlite): for each image set version whose metadata was read, its series as
SeriesInfo (UIDs, Modality, BodyPartExamined, SeriesDescription, counts; no patient
data). Keyed by version, so an image set changed since is read again; shared by every
query on that data store, so a second select with other --where conditions reuses it.
Writes are committed in groups (every COMMIT_EVERY reads, and at close): a kill -9 loses
at most the last group, which the next select reads again.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from batchcopy.query.rows import SeriesInfo

COMMIT_EVERY = 200
_SCHEMA = """CREATE TABLE IF NOT EXISTS series (
    image_set_id TEXT NOT NULL, version TEXT NOT NULL, series TEXT NOT NULL,
    PRIMARY KEY (image_set_id, version))"""


def cache_path(state_dir: Path, datastore_id: str) -> Path:
    return state_dir / "select" / f"{datastore_id}.sqlite"


class SeriesCache:
    """Series per (image set, version) of one data store; `path=None` keeps nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.hits = 0
        self._pending = 0
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._db.commit()

    def get(self, image_set_id: str, version: str) -> list[SeriesInfo] | None:
        if self._db is None:
            return None
        found = self._db.execute("SELECT series FROM series WHERE image_set_id=? AND version=?",
                                 (image_set_id, version)).fetchone()
        if found is None:
            return None
        self.hits += 1
        return [SeriesInfo.from_json(s) for s in json.loads(found[0])]

    def put(self, image_set_id: str, version: str, series: list[SeriesInfo]) -> None:
        if self._db is None:
            return
        self._db.execute("INSERT OR REPLACE INTO series VALUES (?, ?, ?)",
                         (image_set_id, version, json.dumps([s.to_json() for s in series])))
        self._pending += 1
        if self._pending >= COMMIT_EVERY:
            self.commit()

    def commit(self) -> None:
        if self._db is not None and self._pending:
            self._db.commit()
            self._pending = 0

    def close(self) -> None:
        if self._db is not None:
            self.commit()
            self._db.close()
            self._db = None
