"""The journal: a crash-safe ledger of every row and every CopyImageSet call.

SQLite from the standard library, WAL mode, `synchronous=FULL`. Tables:

    meta      schema version and the journal's identity (which manifest it belongs to)
    runs      one line per run: when, exit code, stats
    manifest  the current manifest, row by row: position, row_id, version pins, the row's key
    rows      the ledger, one line per *copy* (CopySpec.key: data store, source,
              destination, subset, flags): its status and outcome. A row keeps its status
              across runs whatever its position or row_id in a regenerated manifest.
    calls     every CopyImageSet call and its state (core/callstate.py enforces the moves)

Writes happen *before* acting: a call is committed SENT before its request leaves, so a
crash at any line leaves either rows PENDING with no open call (a rerun runs them) or an
open call (a rerun settles it against the service before anything is resent).

Row statuses in the ledger: PENDING (not finished in this run), SUCCEEDED, FAILED,
CONFLICT, SKIPPED, NOT_RUN, UNKNOWN (see specs.Status for what a rerun does with each).

Group commit. During a run every write goes through one writer thread: it takes every
write queued so far, runs each in its own savepoint, commits once (one fsync for many
records) and only then resolves the writers' futures. So `await journal.call_sent(...)`
returns once the SENT record is on disk, the event loop never waits on an fsync, and
writes commit in the order they were queued. Outside a run (`batchcopy report`, tests)
the same methods run inline.

A run lock (`fcntl.flock` on `<journal>.lock`) keeps two runs off one journal; the kernel
drops it when the process dies, so kill -9 leaves no stale lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from batchcopy.core.callstate import OPEN, CallRecord, CallState, check_move
from batchcopy.core.specs import REQUEST_FIELDS, CopyRequest, CopySpec, Status

SCHEMA_VERSION = "2"
SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,
    manifest TEXT NOT NULL, pid INTEGER NOT NULL, exit_code INTEGER, stats TEXT);
CREATE TABLE IF NOT EXISTS manifest (
    manifest_row INTEGER PRIMARY KEY, key TEXT NOT NULL, row_id TEXT NOT NULL,
    source_version_id TEXT, destination_version_id TEXT, extras TEXT);
CREATE TABLE IF NOT EXISTS rows (
    key TEXT PRIMARY KEY, datastore_id TEXT NOT NULL, source_image_set_id TEXT NOT NULL,
    destination_image_set_id TEXT, copiable_attributes TEXT,
    force INTEGER NOT NULL, promote_to_primary INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'PENDING', run_id INTEGER, call_id INTEGER,
    call_rows INTEGER, attempts INTEGER NOT NULL DEFAULT 0, throttles INTEGER NOT NULL DEFAULT 0,
    conflicts INTEGER NOT NULL DEFAULT 0, source_version_used TEXT,
    destination_version_used TEXT, result_image_set_id TEXT, result_version_id TEXT,
    workflow_status TEXT, error_code TEXT, error_message TEXT, started_at REAL,
    sent_at REAL, finished_at REAL, evidence TEXT, copy_duration_s REAL,
    detection_delay_s REAL);
CREATE INDEX IF NOT EXISTS rows_status ON rows(status);
CREATE TABLE IF NOT EXISTS calls (
    call_id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, state TEXT NOT NULL,
    row_keys TEXT NOT NULL, datastore_id TEXT NOT NULL,
    source_image_set_id TEXT NOT NULL, source_version_id TEXT NOT NULL,
    destination_image_set_id TEXT, destination_version_id TEXT, copiable_attributes TEXT,
    force INTEGER NOT NULL, promote_to_primary INTEGER NOT NULL, sent_at REAL NOT NULL,
    answered_at REAL, result_image_set_id TEXT, result_version_id TEXT, finished_at REAL,
    workflow_status TEXT, message TEXT, error_code TEXT, error_message TEXT, evidence TEXT);
CREATE INDEX IF NOT EXISTS calls_state ON calls(state);
"""

# Ledger statuses a new run attempts again (with UNKNOWN rows once their call is settled).
RETRY_STATUSES = (Status.NOT_RUN.value, Status.CONFLICT.value)
_OPEN_STATES = tuple(s.value for s in OPEN)
_SPEC_COLUMNS = ("datastore_id", "source_image_set_id", "destination_image_set_id",
                 "copiable_attributes", "force", "promote_to_primary")
_CALL_COLUMNS = ("call_id", "run_id", "state", "row_keys", *REQUEST_FIELDS, "sent_at",
                 "result_image_set_id", "result_version_id", "evidence")
_CHUNK = 500
_ADDED_ROW_COLUMNS = ("copy_duration_s", "detection_delay_s")
T = TypeVar("T")


class JournalError(Exception):
    """The journal cannot be used (missing, empty, corrupt, foreign, unwritable)."""


class JournalUnwritable(JournalError):
    """A write to the journal failed for a reason of its storage: a full disk, an I/O
    error, a file or directory that became read-only. Not a bug: the run stops (nothing is
    sent that the journal could not record) and says so in one line."""

    def __init__(self, path: Path, exc: BaseException) -> None:
        why = getattr(exc, "strerror", None) or str(exc)
        super().__init__(f"the journal {path} cannot be written ({why}): free space or make it "
                         "writable (or move it with --journal), then run again; the next run "
                         "settles the calls this one sent")


# SQLite's primary result codes that mean "the storage refused", not "the program erred"
_STORAGE_CODES = frozenset({8, 10, 13, 14})  # READONLY, IOERR, FULL, CANTOPEN


def storage_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _STORAGE_CODES


class JournalLocked(Exception):
    """Another live process holds this journal's run lock."""


@dataclass
class RowOutcome:
    """What the runner records when rows reach a status."""

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
    copy_duration_s: float | None = None  # the service's (start and end updatedAt)
    detection_delay_s: float | None = None  # from the copy's end to the run seeing it


OUTCOME_COLUMNS = [f.name for f in fields(RowOutcome)]


@dataclass(frozen=True)
class Identity:
    """Which manifest a journal belongs to."""

    manifest: str  # the manifest's URI: an absolute local path or s3://bucket/key
    datastore_id: str | None  # the --datastore-id default, part of what rows mean

    def to_json(self) -> str:
        return json.dumps({"manifest": self.manifest, "datastore_id": self.datastore_id},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Identity":
        d = json.loads(text)
        return cls(d["manifest"], d.get("datastore_id"))


@dataclass(frozen=True)
class ManifestRow:
    """One row of the current manifest with its ledger status (for planning)."""

    spec: CopySpec
    status: str


def inspect(path: Path) -> str:
    """'missing' | 'empty' | 'sqlite' | 'not-sqlite' (a cheap look before opening)."""
    if not path.exists():
        return "missing"
    if path.is_dir():
        return "not-sqlite"
    size = path.stat().st_size
    if size == 0:
        return "empty"
    with path.open("rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    return "sqlite" if head == SQLITE_MAGIC else "not-sqlite"


class Journal:
    """One journal file: reads on the caller's thread, writes inline or through the
    group-commit writer (see the module doc)."""

    def __init__(self, path: Path, *, create: bool = True, check: bool = False) -> None:
        self.path = Path(path)
        state = inspect(self.path)
        if state == "not-sqlite":
            raise JournalError(f"journal {self.path} is not a batchcopy journal (not an SQLite "
                               "file); move it away or choose another --journal")
        if state in ("missing", "empty") and not create:
            raise JournalError(f"journal {self.path} is {state}")
        self._lock_fh: Any = None
        self._writer: _Writer | None = None
        try:
            if state in ("missing", "empty"):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._wdb = self._connect()
            self._wdb.execute("PRAGMA journal_mode=WAL")
            self._wdb.execute("PRAGMA synchronous=FULL")
            if state == "sqlite" and check:
                bad = self._wdb.execute("PRAGMA quick_check").fetchone()[0]
                if bad != "ok":
                    raise JournalError(f"journal {self.path} is damaged ({bad})")
            self._check_schema(fresh=state != "sqlite")
            self.db = self._connect()
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path} cannot be used: {exc}") from None
        except OSError as exc:
            raise JournalError(f"journal {self.path} cannot be created: {exc.strerror or exc}") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                             timeout=30)
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def _check_schema(self, *, fresh: bool) -> None:
        tables = {r[0] for r in self._wdb.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            self._wdb.executescript(_SCHEMA)
            self._wdb.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                              (SCHEMA_VERSION,))
            return
        if "meta" not in tables or "rows" not in tables or "calls" not in tables:
            raise JournalError(f"journal {self.path} is an SQLite file but not a batchcopy journal")
        found = self._wdb.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if found is None or found[0] != SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path} has schema version {found[0] if found else 'none'}, this "
                f"batchcopy writes version {SCHEMA_VERSION}; finish it with the batchcopy that "
                "wrote it, or start over with --fresh")
        # columns added within a schema version (readers that do not know them ignore them)
        have = {r[1] for r in self._wdb.execute("PRAGMA table_info(rows)")}
        for column in _ADDED_ROW_COLUMNS:
            if column not in have:
                self._wdb.execute(f"ALTER TABLE rows ADD COLUMN {column} REAL")

    # ---- lifecycle -------------------------------------------------------
    def lock(self) -> None:
        try:
            fh = open(str(self.path) + ".lock", "a+")
        except OSError as exc:
            raise JournalError(f"cannot create the lock file beside {self.path}: "
                               f"{exc.strerror or exc}") from None
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
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self.db.close()
        self._wdb.close()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_writer(self) -> None:
        """From now on writes go through the group-commit thread (call from the run's loop)."""
        if self._writer is None:
            self._writer = _Writer(self._wdb)
            self._writer.start()

    def stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            self._writer = None

    # ---- identity ----------------------------------------------------------
    def identity(self) -> Identity | None:
        found = self.db.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
        return None if found is None else Identity.from_json(found[0])

    def set_identity(self, identity: Identity) -> None:
        self._wdb.execute("INSERT OR REPLACE INTO meta VALUES ('identity', ?)", (identity.to_json(),))

    def set_manifest_form(self, form: dict[str, Any]) -> None:
        """The staged manifest's columns and delimiter (within the staging transaction)."""
        self._wdb.execute("INSERT OR REPLACE INTO meta VALUES ('manifest_form', ?)",
                          (json.dumps(form),))

    def manifest_form(self) -> dict[str, Any] | None:
        found = self.db.execute("SELECT value FROM meta WHERE key='manifest_form'").fetchone()
        return None if found is None else dict(json.loads(found[0]))

    # ---- runs --------------------------------------------------------------
    def start_run(self, manifest: str) -> int:
        with self._storage():
            cur = self._wdb.execute("INSERT INTO runs (started_at, manifest, pid) VALUES (?, ?, ?)",
                                    (time.time(), manifest, os.getpid()))
        return int(cur.lastrowid)

    def end_run(self, run_id: int, exit_code: int, stats: dict[str, Any]) -> None:
        with self._storage():
            self._wdb.execute("UPDATE runs SET finished_at=?, exit_code=?, stats=? WHERE run_id=?",
                              (time.time(), exit_code, json.dumps(stats, default=str), run_id))

    def latest_run(self) -> int | None:
        return self.db.execute("SELECT max(run_id) FROM runs").fetchone()[0]

    def run_record(self, run_id: int | None = None) -> dict[str, Any] | None:
        """One run (the latest by default) for `batchcopy report`: run_id, started_at,
        finished_at (epoch s; None while running or after a kill), manifest, pid,
        exit_code, and the stats the run wrote at its end (a dict, {} if none)."""
        cur = self.db.execute(
            "SELECT run_id, started_at, finished_at, manifest, pid, exit_code, stats FROM runs "
            + ("WHERE run_id=?" if run_id is not None else "ORDER BY run_id DESC LIMIT 1"),
            (run_id,) if run_id is not None else ())
        found = cur.fetchone()
        if found is None:
            return None
        names = [d[0] for d in cur.description]
        record = dict(zip(names, found))
        record["stats"] = json.loads(record["stats"]) if record["stats"] else {}
        return record

    def run_calls(self, run_id: int) -> list[tuple[float, str, str | None]]:
        """(sent_at, state, error_code) of every CopyImageSet call a run journaled, in order."""
        return [(r[0], r[1], r[2]) for r in self.db.execute(
            "SELECT sent_at, state, error_code FROM calls WHERE run_id=? ORDER BY call_id",
            (run_id,))]

    def has_rows(self) -> bool:
        return self.db.execute("SELECT 1 FROM manifest LIMIT 1").fetchone() is not None

    # ---- staging the manifest (one read, one transaction) -----------------
    def begin_manifest(self) -> None:
        """Start replacing the current manifest; `stage` batches, then commit or rollback."""
        self._wdb.execute("BEGIN IMMEDIATE")
        self._wdb.execute("DELETE FROM manifest")

    def stage(self, specs: Sequence[CopySpec]) -> None:
        self._wdb.executemany(
            "INSERT INTO manifest (manifest_row, key, row_id, source_version_id, "
            "destination_version_id, extras) VALUES (?,?,?,?,?,?)",
            [(s.manifest_row, s.key, s.row_id, s.source_version_id, s.destination_version_id,
              s.extras) for s in specs])
        self._wdb.executemany(
            "INSERT INTO rows (key, datastore_id, source_image_set_id, destination_image_set_id,"
            " copiable_attributes, force, promote_to_primary) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(key) DO NOTHING",
            [(s.key, s.datastore_id, s.source_image_set_id, s.destination_image_set_id,
              s.copiable_attributes, int(s.force), int(s.promote_to_primary)) for s in specs])

    def commit_manifest(self) -> None:
        """Rows a new run attempts again go back to PENDING (and an UNKNOWN row whose call is
        no longer open, which only an interrupted write could leave), then commit."""
        marks = ",".join("?" * len(RETRY_STATUSES))
        self._wdb.execute(
            f"UPDATE rows SET status='PENDING' WHERE status IN ({marks}) "
            f"AND key IN (SELECT key FROM manifest)", RETRY_STATUSES)
        open_keys = set(self.open_call_keys())
        stray = [k for (k,) in self._wdb.execute("SELECT key FROM rows WHERE status='UNKNOWN'")
                 if k not in open_keys]
        self._wdb.executemany("UPDATE rows SET status='PENDING' WHERE key=?", [(k,) for k in stray])
        self._wdb.execute("COMMIT")

    def rollback_manifest(self) -> None:
        self._wdb.execute("ROLLBACK")

    # ---- reading the manifest back, for planning and the report -------------
    def iter_manifest(self, batch: int = 10_000) -> Iterator[list[ManifestRow]]:
        """The current manifest in order, in batches, with each row's ledger status."""
        last = 0
        while True:
            cur = self.db.execute(
                "SELECT m.manifest_row, m.row_id, r.datastore_id, r.source_image_set_id,"
                " m.source_version_id, r.destination_image_set_id, m.destination_version_id,"
                " r.copiable_attributes, r.force, r.promote_to_primary, m.extras, r.status "
                "FROM manifest m JOIN rows r ON r.key = m.key WHERE m.manifest_row > ? "
                "ORDER BY m.manifest_row LIMIT ?", (last, batch))
            chunk = cur.fetchall()
            if not chunk:
                return
            yield [ManifestRow(CopySpec(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
                                        bool(c[8]), bool(c[9]), c[10]), c[11]) for c in chunk]
            last = chunk[-1][0]

    def iter_report_rows(self, batch: int = 10_000) -> Iterator[dict[str, Any]]:
        """The current manifest joined with the ledger, as dicts, in manifest order."""
        last = 0
        while True:
            cur = self.db.execute(
                "SELECT m.manifest_row, m.row_id, m.key, m.source_version_id,"
                " m.destination_version_id, m.extras, r.* FROM manifest m JOIN rows r "
                "ON r.key = m.key WHERE m.manifest_row > ? ORDER BY m.manifest_row LIMIT ?",
                (last, batch))
            names = [d[0] for d in cur.description]
            chunk = cur.fetchall()
            if not chunk:
                return
            for values in chunk:
                yield dict(zip(names, values))
            last = chunk[-1][0]

    def count_rows(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM manifest").fetchone()[0])

    def manifest_statuses(self) -> dict[str, int]:
        return dict(self.db.execute(
            "SELECT r.status, count(*) FROM manifest m JOIN rows r ON r.key = m.key "
            "GROUP BY r.status").fetchall())

    def statuses_before(self, run_id: int) -> dict[str, int]:
        """Statuses of the manifest's rows that did not succeed and were last decided by an
        earlier run than `run_id` (FAILED rows stay FAILED: no run touches them again)."""
        return dict(self.db.execute(
            "SELECT r.status, count(*) FROM manifest m JOIN rows r ON r.key = m.key "
            "WHERE r.run_id < ? AND r.status NOT IN ('SUCCEEDED', 'SKIPPED', 'PENDING') "
            "GROUP BY r.status", (run_id,)).fetchall())

    def row_statuses(self, keys: Iterable[str]) -> dict[str, str]:
        return self._by_keys("SELECT key, status FROM rows WHERE key IN ({})", keys)

    def row_names(self, keys: Iterable[str]) -> dict[str, tuple[str, int]]:
        """{key: (row_id, manifest_row)} in the current manifest (for log lines; the
        manifest table has no index on key: a scan per 500 keys)."""
        found = self._by_keys("SELECT key, row_id || char(31) || manifest_row FROM manifest "
                              "WHERE key IN ({})", keys)
        return {k: (v.split("\x1f")[0], int(v.split("\x1f")[1])) for k, v in found.items()}

    def _by_keys(self, sql: str, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        out: dict[str, Any] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            out.update(self.db.execute(sql.format(",".join("?" * len(chunk))), chunk))
        return out

    def to_run(self) -> tuple[list[str], tuple[str, str] | None]:
        """(the data stores of the rows a run would send or settle, (data store, source) of
        the first such row in manifest order): what the pre-run checks read."""
        active = "r.status IN ('PENDING', 'UNKNOWN')"
        datastores = {r[0] for r in self.db.execute(
            f"SELECT DISTINCT r.datastore_id FROM manifest m JOIN rows r ON r.key = m.key "
            f"WHERE {active}")}
        datastores |= {c.request.datastore_id for c in self.open_calls()}
        first = self.db.execute(
            f"SELECT r.datastore_id, r.source_image_set_id FROM manifest m JOIN rows r "
            f"ON r.key = m.key WHERE {active} ORDER BY m.manifest_row LIMIT 1").fetchone()
        return sorted(datastores), (None if first is None else (first[0], first[1]))

    def held_image_sets(self) -> Iterator[tuple[str, str]]:
        """(data store, image set) of every row of the manifest that may still be written."""
        yield from self.db.execute(
            "SELECT DISTINCT r.datastore_id, r.source_image_set_id FROM manifest m JOIN rows r "
            "ON r.key = m.key WHERE r.status NOT IN ('SUCCEEDED', 'SKIPPED', 'FAILED') "
            "UNION SELECT DISTINCT r.datastore_id, r.destination_image_set_id FROM manifest m "
            "JOIN rows r ON r.key = m.key WHERE r.status NOT IN ('SUCCEEDED', 'SKIPPED', "
            "'FAILED') AND r.destination_image_set_id IS NOT NULL")

    # ---- calls: reads ------------------------------------------------------
    def open_calls(self) -> list[CallRecord]:
        """Calls that may have made (or be making) a copy, oldest first."""
        marks = ",".join("?" * len(_OPEN_STATES))
        cur = self.db.execute(
            f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls WHERE state IN ({marks}) "
            "ORDER BY call_id", _OPEN_STATES)
        return [_call_record(r) for r in cur.fetchall()]

    def call(self, call_id: int) -> CallRecord:
        row = self.db.execute(f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls WHERE call_id=?",
                              (call_id,)).fetchone()
        if row is None:
            raise KeyError(call_id)
        return _call_record(row)

    def open_call_keys(self) -> dict[str, int]:
        """{row key: call id} of rows carried by a call that is not settled."""
        return {k: c.call_id for c in self.open_calls() for k in c.row_keys}

    def known_results(self, datastore_id: str) -> set[str]:
        """Image sets this journal's calls are known to have created or written."""
        cur = self.db.execute(
            "SELECT DISTINCT result_image_set_id FROM calls WHERE datastore_id=? "
            "AND result_image_set_id IS NOT NULL", (datastore_id,))
        return {r[0] for r in cur.fetchall()}

    def count_calls(self, state: str | None = None) -> int:
        if state is None:
            return int(self.db.execute("SELECT count(*) FROM calls").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM calls WHERE state=?",
                                   (state,)).fetchone()[0])

    # ---- writes (inline, or through the group-commit writer) ----------------
    @contextlib.contextmanager
    def _storage(self) -> Iterator[None]:
        """A write the storage refuses raises JournalUnwritable (other errors as they are)."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            if storage_failure(exc):
                raise JournalUnwritable(self.path, exc) from None
            raise

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(db)` as one write: inline, or through the group-commit writer.
        JournalUnwritable when the storage refuses it."""
        with self._storage():
            if self._writer is None:
                return _in_transaction(self._wdb, fn)
            return await asyncio.wrap_future(self._writer.submit(fn))

    async def flush(self) -> None:
        """Return once every write queued before it is committed (or dropped)."""
        await self.write(lambda db: None)

    async def call_sent(self, run_id: int, request: CopyRequest, keys: Sequence[str],
                        sent_at: float) -> int:
        """Durably record a CopyImageSet call *before* its request leaves."""
        values = [getattr(request, f) for f in REQUEST_FIELDS]

        def write(db: sqlite3.Connection) -> int:
            cur = db.execute(
                f"INSERT INTO calls (run_id, state, row_keys, {', '.join(REQUEST_FIELDS)},"
                f" sent_at) VALUES (?, 'SENT', ?, {', '.join('?' * len(REQUEST_FIELDS))}, ?)",
                (run_id, json.dumps(list(keys)), *values, sent_at))
            return int(cur.lastrowid)

        return await self.write(write)

    async def call_answered(self, call_id: int, image_set_id: str, version_id: str) -> None:
        await self._move(call_id, CallState.ANSWERED, answered_at=time.time(),
                         result_image_set_id=image_set_id, result_version_id=version_id)

    async def call_adopted(self, call_id: int, image_set_id: str, version_id: str,
                           evidence: str) -> None:
        await self._move(call_id, CallState.ADOPTED, answered_at=time.time(),
                         result_image_set_id=image_set_id, result_version_id=version_id,
                         evidence=evidence)

    async def call_rejected(self, call_id: int, error_code: str, error_message: str) -> None:
        await self._move(call_id, CallState.REJECTED, answered_at=time.time(),
                         error_code=error_code, error_message=error_message)

    async def call_ambiguous(self, call_id: int, error_code: str | None,
                             error_message: str | None, evidence: str | None = None) -> None:
        changes: dict[str, Any] = {"evidence": evidence}
        if error_code is not None:
            changes.update(error_code=error_code, error_message=error_message)
        await self._move(call_id, CallState.AMBIGUOUS, **changes)

    async def call_void(self, call_id: int, evidence: str) -> None:
        await self._move(call_id, CallState.VOID, evidence=evidence)

    async def call_done(self, call_id: int, workflow_status: str | None,
                        message: str | None) -> None:
        """The copy ended, and its rows go on to another call (a conflict in disguise)."""
        await self._move(call_id, CallState.DONE, finished_at=time.time(),
                         workflow_status=workflow_status, message=message)

    async def _move(self, call_id: int, new: CallState, **changes: Any) -> None:
        def write(db: sqlite3.Connection) -> None:
            found = db.execute("SELECT state FROM calls WHERE call_id=?", (call_id,)).fetchone()
            if found is None:
                raise KeyError(f"call {call_id} is not in the journal")
            check_move(call_id, CallState(found[0]), new)
            sets = ", ".join(f"{c}=?" for c in changes)
            db.execute(f"UPDATE calls SET state=?{', ' + sets if sets else ''} WHERE call_id=?",
                       (new.value, *changes.values(), call_id))

        await self.write(write)

    async def finish_rows(self, run_id: int, keys: Sequence[str], outcome: RowOutcome, *,
                          done_call: tuple[int, str | None, str | None] | None = None,
                          only_pending: bool = False) -> int:
        """Record rows' outcome; with `done_call` (call_id, workflow status, message) the
        call moves to DONE in the same transaction, so a crash can never leave a call DONE
        with its rows PENDING. Returns how many rows were written."""
        values = [getattr(outcome, c) for c in OUTCOME_COLUMNS]
        values[0] = outcome.status.value
        sets = ", ".join(f"{c}=?" for c in OUTCOME_COLUMNS)
        guard = " AND status='PENDING'" if only_pending else ""

        def write(db: sqlite3.Connection) -> int:
            if done_call is not None:
                call_id, workflow_status, message = done_call
                state = db.execute("SELECT state FROM calls WHERE call_id=?", (call_id,)).fetchone()
                check_move(call_id, CallState(state[0]), CallState.DONE)
                db.execute("UPDATE calls SET state='DONE', finished_at=?, workflow_status=?, "
                           "message=? WHERE call_id=?",
                           (time.time(), workflow_status, message, call_id))
            n = 0
            for k in keys:
                n += db.execute(f"UPDATE rows SET {sets}, run_id=? WHERE key=?{guard}",
                                (*values, run_id, k)).rowcount
            return n

        return await self.write(write)

    async def reset_rows(self, keys: Sequence[str]) -> None:
        """Put rows back to PENDING (a void call: this or a later run attempts them again)."""
        def write(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE rows SET status='PENDING' WHERE key=?", [(k,) for k in keys])

        await self.write(write)

    async def mark_pending_not_run(self, run_id: int, reason: str,
                                   error_code: str | None = None) -> int:
        """Rows of the manifest still PENDING and carried by no open call: NOT_RUN."""
        open_keys = set(self.open_call_keys())

        def write(db: sqlite3.Connection) -> int:
            pending = [k for (k,) in db.execute(
                "SELECT r.key FROM manifest m JOIN rows r ON r.key = m.key "
                "WHERE r.status='PENDING'") if k not in open_keys]
            db.executemany(
                "UPDATE rows SET status=?, run_id=?, error_code=?, error_message=?, "
                "finished_at=?, call_id=NULL, call_rows=NULL, evidence=NULL WHERE key=?",
                [(Status.NOT_RUN.value, run_id, error_code, reason, time.time(), k)
                 for k in pending])
            return len(pending)

        return await self.write(write)


def _call_record(r: Sequence[Any]) -> CallRecord:
    n = len(REQUEST_FIELDS)
    req = list(r[4:4 + n])
    req[-2], req[-1] = bool(req[-2]), bool(req[-1])  # force, promote_to_primary: 0/1 in SQLite
    return CallRecord(call_id=r[0], run_id=r[1], state=CallState(r[2]),
                      row_keys=tuple(json.loads(r[3])), request=CopyRequest(*req),
                      sent_at=r[4 + n], result_image_set_id=r[5 + n],
                      result_version_id=r[6 + n], evidence=r[7 + n])


def _in_transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


class _Writer:
    """The group-commit thread: every queued write in one transaction, one commit."""

    _STOP = object()

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="batchcopy-journal", daemon=True)
        self.commits = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], Any]) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((fn, fut))
        return fut

    def stop(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            batch = []
            stop = item is self._STOP
            if not stop:
                batch.append(item)
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is self._STOP:
                    stop = True
                    continue
                batch.append(nxt)
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Callable[[sqlite3.Connection], Any],
                                        concurrent.futures.Future[Any]]]) -> None:
        # a write whose awaiting task was cancelled before it began is dropped (every write
        # is a consistent step on its own); once running, a write can no longer be cancelled
        batch = [(fn, fut) for fn, fut in batch if fut.set_running_or_notify_cancel()]
        if not batch:
            return
        results: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                self.db.execute("SAVEPOINT w")
                try:
                    value = fn(self.db)
                except Exception as exc:  # this write fails alone; the others stand
                    self.db.execute("ROLLBACK TO w")
                    self.db.execute("RELEASE w")
                    results.append((fut, False, exc))
                    continue
                self.db.execute("RELEASE w")
                results.append((fut, True, value))
            self.db.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # the commit itself failed (disk full, I/O error)
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for fut, ok, value in results:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
