"""The journal: a crash-safe record of every row and every CopyImageSet call.

SQLite from the standard library, WAL mode, `synchronous=FULL`: a commit is on disk
when the call returns. The runner writes *before* it acts:

    row     PENDING --------------------------------> SUCCEEDED | FAILED | CONFLICT
                                                      | UNKNOWN | NOT_RUN
    call    SENT (committed before the request leaves)
              -> ANSWERED (ids and versions the service returned)
                   -> DONE (COPIED / COPY_FAILED observed with GetImageSet)
              -> REJECTED (the service refused it: nothing was copied)
              -> AMBIGUOUS (no answer: it may or may not have happened)
                   -> ADOPTED (reconciliation found the copy) -> DONE
                   -> VOID (reconciliation proved it did not happen)

So a crash at any line leaves one of: a call SENT or AMBIGUOUS with no answer (resume
reconciles it against the service before anything is resent), a call ANSWERED (resume
waits for it), or rows PENDING with no open call (resume runs them).

A run lock (`fcntl.flock` on `<journal>.lock`) keeps two runs from dispatching from one
journal; the kernel drops it when the process dies, so kill -9 leaves no stale lock.

The Parquet report is derived from the `rows` table (`iter_results`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from batchcopy.specs import CopySpec, Status

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,
    manifest TEXT NOT NULL, pid INTEGER NOT NULL, exit_code INTEGER, stats TEXT);
CREATE TABLE IF NOT EXISTS rows (
    manifest_row INTEGER PRIMARY KEY, row_id TEXT NOT NULL UNIQUE, spec_hash TEXT NOT NULL,
    datastore_id TEXT NOT NULL, source_image_set_id TEXT NOT NULL, source_version_id TEXT,
    destination_image_set_id TEXT, destination_version_id TEXT, copiable_attributes TEXT,
    force INTEGER NOT NULL, promote_to_primary INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'PENDING', run_id INTEGER, call_id INTEGER,
    call_rows INTEGER, attempts INTEGER NOT NULL DEFAULT 0, throttles INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0, source_version_used TEXT,
    destination_version_used TEXT, result_image_set_id TEXT, result_version_id TEXT,
    workflow_status TEXT, error_code TEXT, error_message TEXT, started_at REAL,
    sent_at REAL, finished_at REAL, evidence TEXT);
CREATE INDEX IF NOT EXISTS rows_status ON rows(status);
CREATE TABLE IF NOT EXISTS calls (
    call_id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, state TEXT NOT NULL,
    manifest_rows TEXT NOT NULL, datastore_id TEXT NOT NULL,
    source_image_set_id TEXT NOT NULL, source_version_id TEXT NOT NULL,
    destination_image_set_id TEXT, destination_version_id TEXT, copiable_attributes TEXT,
    force INTEGER NOT NULL, promote_to_primary INTEGER NOT NULL, sent_at REAL NOT NULL,
    answered_at REAL, result_image_set_id TEXT, result_version_id TEXT, finished_at REAL,
    workflow_status TEXT, message TEXT, error_code TEXT, error_message TEXT, evidence TEXT);
CREATE INDEX IF NOT EXISTS calls_state ON calls(state);
"""

# Row statuses a resumed run leaves alone; the others are attempted again.
FINAL_ROW_STATUSES = frozenset({Status.SUCCEEDED.value, Status.FAILED.value})
OPEN_CALL_STATES = ("SENT", "AMBIGUOUS", "ANSWERED", "ADOPTED")


class JournalLocked(Exception):
    """Another live process holds this journal's run lock."""


class ChangedRows(Exception):
    """Manifest rows whose row_id is in the journal with a different spec."""

    def __init__(self, changes: list[tuple[str, int, int]]) -> None:
        self.changes = changes  # (row_id, manifest_row now, manifest_row in journal)
        shown = ", ".join(f"row_id {r!r} (row {m})" for r, m, _ in changes[:10])
        more = f" and {len(changes) - 10} more" if len(changes) > 10 else ""
        super().__init__(
            f"{len(changes)} manifest row(s) differ from what the journal recorded for the "
            f"same row_id: {shown}{more}. A resumed run must use the same manifest; give "
            "changed rows new row_ids or start a new journal.")


def spec_hash(spec: CopySpec) -> str:
    """A digest of what a row asks for (not where it stands in the file)."""
    d = asdict(spec)
    d.pop("manifest_row")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CallRecord:
    call_id: int
    run_id: int
    state: str
    manifest_rows: tuple[int, ...]
    datastore_id: str
    source_image_set_id: str
    source_version_id: str
    destination_image_set_id: str | None
    destination_version_id: str | None
    copiable_attributes: str | None
    force: bool
    promote_to_primary: bool
    sent_at: float
    result_image_set_id: str | None = None
    result_version_id: str | None = None
    evidence: str | None = None


@dataclass
class RowOutcome:
    """What the runner records when a row reaches a terminal status."""

    status: Status
    call_id: int | None = None
    call_rows: int | None = None
    attempts: int = 0
    throttles: int = 0
    conflicts: int = 0
    source_version_used: str | None = None
    destination_version_used: str | None = None
    result_image_set_id: str | None = None
    result_version_id: str | None = None
    workflow_status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    started_at: float | None = None
    sent_at: float | None = None
    finished_at: float | None = None
    evidence: str | None = None


OUTCOME_COLUMNS = [f.name for f in fields(RowOutcome)]


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fh: Any = None
        self.db = sqlite3.connect(str(self.path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    # ---- lifecycle -------------------------------------------------------
    def lock(self) -> None:
        fh = open(str(self.path) + ".lock", "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise JournalLocked(
                f"journal {self.path} is in use by another batchcopy run"
                + (f" (pid {holder})" if holder else "")) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh

    def close(self) -> None:
        self.db.close()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_run(self, manifest: str) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (started_at, manifest, pid) VALUES (?, ?, ?)",
            (time.time(), manifest, os.getpid()))
        return int(cur.lastrowid)

    def end_run(self, run_id: int, exit_code: int, stats: dict[str, Any]) -> None:
        self.db.execute("UPDATE runs SET finished_at=?, exit_code=?, stats=? WHERE run_id=?",
                        (time.time(), exit_code, json.dumps(stats, default=str), run_id))

    def latest_run(self) -> int | None:
        row = self.db.execute("SELECT max(run_id) FROM runs").fetchone()
        return row[0]

    def has_rows(self) -> bool:
        return self.db.execute("SELECT 1 FROM rows LIMIT 1").fetchone() is not None

    # ---- rows ------------------------------------------------------------
    def changed_rows(self, specs: Sequence[CopySpec]) -> list[tuple[str, int, int]]:
        """Rows whose row_id the journal knows with another spec or at another position,
        and new row_ids at a position the journal holds for another row: (row_id,
        manifest_row now, manifest_row in the journal). Reads only."""
        return self._compare(specs)[0]

    def register_rows(self, specs: Sequence[CopySpec]) -> dict[int, str]:
        """Record new rows as PENDING; return {manifest_row: status} of rows already known.

        Raises ChangedRows when a row_id is known with a different spec (or at another
        position): resuming with an edited manifest must not silently skip work.
        """
        if not specs:
            return {}
        changes, prior, new = self._compare(specs)
        if changes:
            raise ChangedRows(changes)
        if new:
            with self._tx():
                self.db.executemany(
                    "INSERT INTO rows (manifest_row, row_id, spec_hash, datastore_id, "
                    "source_image_set_id, source_version_id, destination_image_set_id, "
                    "destination_version_id, copiable_attributes, force, promote_to_primary) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?)", new)
        return prior

    def _compare(self, specs: Sequence[CopySpec]) -> tuple[
            list[tuple[str, int, int]], dict[int, str], list[tuple[Any, ...]]]:
        """(changes, {manifest_row: status} of known rows, values of new rows)."""
        known: dict[str, tuple[int, str, str]] = {}
        ids = [s.row_id for s in specs]
        for chunk_start in range(0, len(ids), 500):
            chunk = ids[chunk_start:chunk_start + 500]
            marks = ",".join("?" * len(chunk))
            for row_id, mrow, h, status in self.db.execute(
                    f"SELECT row_id, manifest_row, spec_hash, status FROM rows "
                    f"WHERE row_id IN ({marks})", chunk):
                known[row_id] = (mrow, h, status)
        changes: list[tuple[str, int, int]] = []
        prior: dict[int, str] = {}
        new: list[tuple[Any, ...]] = []
        for s in specs:
            h = spec_hash(s)
            if s.row_id in known:
                mrow, old_hash, status = known[s.row_id]
                if old_hash != h or mrow != s.manifest_row:
                    changes.append((s.row_id, s.manifest_row, mrow))
                else:
                    prior[s.manifest_row] = status
            else:
                new.append((s.manifest_row, s.row_id, h, s.datastore_id, s.source_image_set_id,
                            s.source_version_id, s.destination_image_set_id,
                            s.destination_version_id, s.copiable_attributes, int(s.force),
                            int(s.promote_to_primary)))
        if new:
            rows = [n[0] for n in new]
            for i in range(0, len(rows), 500):
                chunk = rows[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for mrow, row_id in self.db.execute(
                        f"SELECT manifest_row, row_id FROM rows WHERE manifest_row IN ({marks})",
                        chunk):
                    changes.append((row_id, mrow, mrow))
        return changes, prior, new

    def finish_rows(self, run_id: int, manifest_rows: Iterable[int], outcome: RowOutcome, *,
                    done_call: tuple[int, str, str | None] | None = None) -> None:
        """Record rows' terminal outcome; with `done_call` (call_id, workflow status,
        message) the call is closed in the same transaction, so a crash can never leave
        a call DONE with its rows still PENDING (which a resume would copy again)."""
        values = [getattr(outcome, c) for c in OUTCOME_COLUMNS]
        values[0] = outcome.status.value
        sets = ", ".join(f"{c}=?" for c in OUTCOME_COLUMNS)
        with self._tx():
            self.db.executemany(
                f"UPDATE rows SET {sets}, run_id=? WHERE manifest_row=?",
                [(*values, run_id, m) for m in manifest_rows])
            if done_call is not None:
                call_id, workflow_status, message = done_call
                self.db.execute(
                    "UPDATE calls SET state='DONE', finished_at=?, workflow_status=?, message=? "
                    "WHERE call_id=?", (time.time(), workflow_status, message, call_id))

    def mark_pending_not_run(self, run_id: int, reason: str) -> int:
        cur = self.db.execute(
            "UPDATE rows SET status=?, run_id=?, error_code=NULL, error_message=?, "
            "finished_at=? WHERE status='PENDING'",
            (Status.NOT_RUN.value, run_id, reason, time.time()))
        return cur.rowcount

    def row_statuses(self, manifest_rows: Iterable[int]) -> dict[int, str]:
        rows = list(manifest_rows)
        out: dict[int, str] = {}
        for i in range(0, len(rows), 500):
            chunk = rows[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out.update(self.db.execute(
                f"SELECT manifest_row, status FROM rows WHERE manifest_row IN ({marks})", chunk))
        return out

    def reset_rows(self, manifest_rows: Iterable[int]) -> None:
        """Put rows back to PENDING (a resumed run attempts them again)."""
        with self._tx():
            self.db.executemany("UPDATE rows SET status='PENDING' WHERE manifest_row=?",
                                [(m,) for m in manifest_rows])

    def count_rows(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM rows").fetchone()[0])

    def iter_rows(self, batch: int = 10_000) -> Iterator[dict[str, Any]]:
        """Every row in manifest order, as dicts of the rows table."""
        last = 0
        while True:
            cur = self.db.execute(
                "SELECT * FROM rows WHERE manifest_row > ? ORDER BY manifest_row LIMIT ?",
                (last, batch))
            names = [d[0] for d in cur.description]
            chunk = cur.fetchall()
            if not chunk:
                return
            for values in chunk:
                yield dict(zip(names, values))
            last = chunk[-1][0]

    # ---- calls -----------------------------------------------------------
    def call_sent(self, run_id: int, manifest_rows: Sequence[int], *, datastore_id: str,
                  source_image_set_id: str, source_version_id: str,
                  destination_image_set_id: str | None, destination_version_id: str | None,
                  copiable_attributes: str | None, force: bool, promote_to_primary: bool,
                  sent_at: float) -> int:
        """Durably record a CopyImageSet call *before* its request leaves."""
        cur = self.db.execute(
            "INSERT INTO calls (run_id, state, manifest_rows, datastore_id, source_image_set_id,"
            " source_version_id, destination_image_set_id, destination_version_id,"
            " copiable_attributes, force, promote_to_primary, sent_at)"
            " VALUES (?, 'SENT', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, json.dumps(list(manifest_rows)), datastore_id, source_image_set_id,
             source_version_id, destination_image_set_id, destination_version_id,
             copiable_attributes, int(force), int(promote_to_primary), sent_at))
        return int(cur.lastrowid)

    def call_answered(self, call_id: int, result_image_set_id: str, result_version_id: str,
                      *, state: str = "ANSWERED", evidence: str | None = None) -> None:
        self.db.execute(
            "UPDATE calls SET state=?, answered_at=?, result_image_set_id=?, "
            "result_version_id=?, evidence=coalesce(?, evidence) WHERE call_id=?",
            (state, time.time(), result_image_set_id, result_version_id, evidence, call_id))

    def call_rejected(self, call_id: int, error_code: str, error_message: str) -> None:
        self.db.execute(
            "UPDATE calls SET state='REJECTED', answered_at=?, error_code=?, error_message=? "
            "WHERE call_id=?", (time.time(), error_code, error_message, call_id))

    def call_ambiguous(self, call_id: int, error_code: str, error_message: str) -> None:
        self.db.execute(
            "UPDATE calls SET state='AMBIGUOUS', error_code=?, error_message=? WHERE call_id=?",
            (error_code, error_message, call_id))

    def call_void(self, call_id: int, evidence: str) -> None:
        self.db.execute("UPDATE calls SET state='VOID', evidence=? WHERE call_id=?",
                        (evidence, call_id))

    def open_calls(self) -> list[CallRecord]:
        """Calls a crash (or an abort) left unresolved, oldest first."""
        marks = ",".join("?" * len(OPEN_CALL_STATES))
        cur = self.db.execute(
            f"SELECT call_id, run_id, state, manifest_rows, datastore_id, source_image_set_id,"
            f" source_version_id, destination_image_set_id, destination_version_id,"
            f" copiable_attributes, force, promote_to_primary, sent_at, result_image_set_id,"
            f" result_version_id, evidence FROM calls WHERE state IN ({marks}) ORDER BY call_id",
            OPEN_CALL_STATES)
        return [CallRecord(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], r[6], r[7],
                           r[8], r[9], bool(r[10]), bool(r[11]), r[12], r[13], r[14], r[15])
                for r in cur.fetchall()]

    def open_call_rows(self) -> dict[int, int]:
        """{manifest_row: call_id} of rows carried by a call that is not settled."""
        return {m: call.call_id for call in self.open_calls() for m in call.manifest_rows}

    def known_results(self, datastore_id: str) -> set[str]:
        """Image sets that calls in this journal are known to have created or written."""
        cur = self.db.execute(
            "SELECT DISTINCT result_image_set_id FROM calls WHERE datastore_id=? "
            "AND result_image_set_id IS NOT NULL", (datastore_id,))
        return {r[0] for r in cur.fetchall()}

    def touched_image_sets(self) -> set[str]:
        """Image sets earlier calls named or wrote: their manifest version pins are stale."""
        out: set[str] = set()
        for a, b, c in self.db.execute(
                "SELECT source_image_set_id, destination_image_set_id, result_image_set_id "
                "FROM calls WHERE state NOT IN ('REJECTED', 'VOID')"):
            out.update(x for x in (a, b, c) if x)
        return out

    def count_calls(self, state: str | None = None) -> int:
        if state is None:
            return int(self.db.execute("SELECT count(*) FROM calls").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM calls WHERE state=?",
                                   (state,)).fetchone()[0])

    # ---- helpers ---------------------------------------------------------
    def _tx(self) -> "_Transaction":
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
