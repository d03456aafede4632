"""The journal: the ledger of every row copied and every CopyImageSet call, in one SQLite
file (crash safe).

SQLite from the standard library, WAL mode, `synchronous=FULL`. Tables:

    meta          schema version; the staged manifest's digest; for a cache of an S3 state,
                  the last log segment it holds (journal/s3log.py)
    runs          one line per run: when, where (host, pid), exit code, stats
    manifest      the current manifest (the latest run's), row by row: position, row_id,
                  version pins, extras, the row's key
    rows          the ledger, one line per *copy* (CopySpec.key: data store, source,
                  destination, subset, flags): its status and outcome. A row keeps its status
                  whatever manifest, file name, position or row_id brings it back.
    calls         every CopyImageSet call and its state (core/callstate.py enforces the moves;
                  the writes are journal/calls.py's)
    undo_actions  what `batchcopy undo` planned and did (journal/undo.py)

One journal is one state's ledger (journal/state.py: a local directory, an explicit
`--journal` file, or the local cache of an `s3://` state): every manifest run against it
shares the ledger, so a renamed or regenerated manifest finds its done rows.

Writes happen *before* acting: a call is committed SENT before its request leaves, so a
crash at any line leaves either rows PENDING with no open call (a rerun runs them) or an
open call (a rerun settles it against the service before anything is resent). During a
run every write goes through the group-commit thread (journal/writer.py); outside a run
the same methods run inline. Where writes become durable is the committer's business: the
file itself (LocalCommitter), or S3 first (journal/s3log.py).

A new journal is built complete in a temporary file beside its name and linked into place
in one step (`create_ledger`): nobody ever sees a half-built one.

A run lock (`fcntl.flock` on `<journal>.lock`, holding a line about its holder) keeps two
runs off one journal; the kernel drops it when the process dies, so kill -9 leaves no stale
lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from batchcopy.core.specs import CopySpec, Status
from batchcopy.journal.calls import OUTCOME_COLUMNS, CallLedger, RowOutcome
from batchcopy.journal.locks import LockedError, take_lock
from batchcopy.journal.schema import (SCHEMA_VERSION, add_columns, create_ledger, inspect,
                                      migrate)
from batchcopy.journal.writer import Committer, GroupWriter, LocalCommitter, Recorder, Write

# Ledger statuses a new run attempts again (with UNKNOWN rows once their call is settled).
RETRY_STATUSES = (Status.NOT_RUN.value, Status.CONFLICT.value)
T = TypeVar("T")
__all__ = ["Journal", "JournalError", "JournalLocked", "JournalUnwritable", "ManifestRow",
           "OUTCOME_COLUMNS", "RowOutcome", "create_ledger", "inspect", "storage_failure"]


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


@dataclass(frozen=True)
class ManifestRow:
    """One row of the current manifest with its ledger status (for planning)."""

    spec: CopySpec
    status: str


class Journal(CallLedger):
    """One ledger file: reads on the caller's thread, writes inline or through the
    group-commit writer (see the module doc)."""

    def __init__(self, path: Path, *, create: bool = True, check: bool = False,
                 committer: Committer | None = None) -> None:
        self.path = Path(path)
        self.committer: Committer = committer or LocalCommitter()
        state = inspect(self.path)
        if state == "not-sqlite":
            raise JournalError(f"journal {self.path} is not a batchcopy journal (not an SQLite "
                               "file); move it away or choose another --journal")
        if state in ("missing", "empty") and not create:
            raise JournalError(f"journal {self.path} is {state}")
        self._lock_fh: Any = None
        self._writer: GroupWriter | None = None
        self._digest: Any = None
        self._inserted = 0
        try:
            if state in ("missing", "empty"):
                create_ledger(self.path)
            self._wdb = self._connect()
            self._wdb.execute("PRAGMA journal_mode=WAL")
            self._wdb.execute("PRAGMA synchronous=FULL")
            if state == "sqlite" and check:
                bad = self._wdb.execute("PRAGMA quick_check").fetchone()[0]
                if bad != "ok":
                    raise JournalError(f"journal {self.path} is damaged ({bad})")
            self._check_schema()
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

    def _check_schema(self) -> None:
        tables = {r[0] for r in self._wdb.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables or "rows" not in tables or "calls" not in tables:
            raise JournalError(f"journal {self.path} is an SQLite file but not a batchcopy journal")
        found = self._wdb.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = migrate(self._wdb, found[0] if found else None)
        if version != SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path} has schema version {version or 'none'}, this batchcopy "
                f"writes version {SCHEMA_VERSION}; finish it with the batchcopy that wrote it, "
                "or start over with --fresh")
        add_columns(self._wdb)  # columns added within a schema version

    # ---- lifecycle -------------------------------------------------------
    def lock(self, holder: str | None = None) -> None:
        """Take the run lock, or raise JournalLocked naming its holder."""
        try:
            self._lock_fh = take_lock(Path(str(self.path) + ".lock"), holder,
                                      what=f"journal {self.path}")
        except LockedError as exc:
            raise JournalLocked(str(exc)) from None
        except OSError as exc:
            raise JournalError(str(exc)) from None

    def close(self) -> None:
        self.stop_writer()
        finish = getattr(self.committer, "close", None)  # an s3:// state's compaction, if any
        if finish is not None:
            finish(self._wdb)
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
            self._writer = GroupWriter(self._wdb, self.committer)
            self._writer.start()

    def stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.stop()
            self._writer = None

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

    async def write(self, fn: Callable[[Any], T], *, urgent: bool = False,
                    flush: bool = False) -> T:
        """Run `fn(db)` as one write: inline, or through the group-commit writer. `urgent`:
        durable where the state lives before it returns, or an error (journal/writer.py).
        JournalUnwritable when the local storage refuses it."""
        w = Write(fn, urgent=urgent, flush=flush)
        with self._storage():
            if self._writer is None:
                self.committer.commit(self._wdb, [w])
                return w.future.result()  # type: ignore[no-any-return]
            return await asyncio.wrap_future(self._writer.submit(w))

    def write_now(self, fn: Callable[[Any], T]) -> T:
        """`write` for code outside the run's loop, before the writer thread starts."""
        assert self._writer is None, "write_now() while the group-commit writer runs"
        w = Write(fn)
        with self._storage():
            self.committer.commit(self._wdb, [w])
            return w.future.result()  # type: ignore[no-any-return]

    async def flush(self) -> None:
        """Return once every write queued before it is committed (or dropped)."""
        await self.write(lambda db: None, flush=True)

    def set_manifest_form(self, form: dict[str, Any]) -> None:
        """The staged manifest's columns and delimiter (within the staging transaction; a
        new form is a changed manifest, so an s3:// state snapshots it)."""
        text = json.dumps(form)
        if self._digest is not None:
            self._digest.update(text.encode())
        self._wdb.execute("INSERT OR REPLACE INTO meta VALUES ('manifest_form', ?)", (text,))

    def manifest_form(self) -> dict[str, Any] | None:
        found = self.db.execute("SELECT value FROM meta WHERE key='manifest_form'").fetchone()
        return None if found is None else dict(json.loads(found[0]))

    # ---- runs --------------------------------------------------------------
    def start_run(self, manifest: str) -> int:
        def write(db: Any) -> int:
            cur = db.execute("INSERT INTO runs (started_at, manifest, pid, host) VALUES (?, ?, ?, ?)",
                             (time.time(), manifest, os.getpid(), socket.gethostname()))
            return int(cur.lastrowid)

        return self.write_now(write)

    def end_run(self, run_id: int, exit_code: int, stats: dict[str, Any]) -> None:
        text = json.dumps(stats, default=str)
        self.write_now(lambda db: db.execute(
            "UPDATE runs SET finished_at=?, exit_code=?, stats=? WHERE run_id=?",
            (time.time(), exit_code, text, run_id)))

    def latest_run(self) -> int | None:
        found: int | None = self.db.execute("SELECT max(run_id) FROM runs").fetchone()[0]
        return found

    def run_record(self, run_id: int | None = None) -> dict[str, Any] | None:
        """One run (the latest by default) for `batchcopy report`: run_id, started_at,
        finished_at (epoch s; None while running or after a kill), manifest, pid, host,
        exit_code, and the stats the run wrote at its end (a dict, {} if none)."""
        cur = self.db.execute(
            "SELECT run_id, started_at, finished_at, manifest, pid, host, exit_code, stats FROM runs "
            + ("WHERE run_id=?" if run_id is not None else "ORDER BY run_id DESC LIMIT 1"),
            (run_id,) if run_id is not None else ())
        found = cur.fetchone()
        if found is None:
            return None
        names = [d[0] for d in cur.description]
        record = dict(zip(names, found))
        record["stats"] = json.loads(record["stats"]) if record["stats"] else {}
        return record

    def has_rows(self) -> bool:
        return self.db.execute("SELECT 1 FROM manifest LIMIT 1").fetchone() is not None

    # ---- staging the manifest (one read, one transaction) -----------------
    def begin_manifest(self) -> None:
        """Start replacing the current manifest; `stage` batches, then `prepare_manifest`,
        then `commit_manifest` (or `rollback_manifest`). Nothing is visible before the
        commit."""
        self._wdb.execute("BEGIN IMMEDIATE")
        self._wdb.execute("DELETE FROM manifest")
        self._digest = hashlib.blake2b(digest_size=16)
        self._inserted = 0

    def stage(self, specs: Sequence[CopySpec]) -> None:
        manifest = [(s.manifest_row, s.key, s.row_id, s.source_version_id,
                     s.destination_version_id, s.extras) for s in specs]
        self._wdb.executemany(
            "INSERT INTO manifest (manifest_row, key, row_id, source_version_id, "
            "destination_version_id, extras) VALUES (?,?,?,?,?,?)", manifest)
        cur = self._wdb.executemany(
            "INSERT INTO rows (key, datastore_id, source_image_set_id, destination_image_set_id,"
            " copiable_attributes, force, promote_to_primary) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(key) DO NOTHING",
            [(s.key, s.datastore_id, s.source_image_set_id, s.destination_image_set_id,
              s.copiable_attributes, int(s.force), int(s.promote_to_primary)) for s in specs])
        self._inserted += max(0, cur.rowcount)
        self._digest.update(json.dumps(manifest, separators=(",", ":")).encode())

    def prepare_manifest(self, *, fresh: bool = False) -> list[list[Any]]:
        """Inside the staging transaction: rows a new run attempts again go back to PENDING
        (and an UNKNOWN row whose call is no longer open, which only an interrupted write
        could leave); with `fresh`, every row of this manifest forgets its status, except
        rows a call still open may have copied (they are settled first). Returns the
        statements it ran (an S3 state logs them)."""
        rec = Recorder(self._wdb)
        in_manifest = "key IN (SELECT key FROM manifest)"
        not_open = f"key NOT IN ({self.OPEN_KEYS_SQL})"
        if fresh:
            blank = ", ".join(f"{c}=NULL" for c in OUTCOME_COLUMNS
                              if c not in ("status", "attempts", "throttles", "conflicts"))
            rec.execute(f"UPDATE rows SET status='PENDING', run_id=NULL, attempts=0, throttles=0, "
                        f"conflicts=0, {blank} WHERE {in_manifest} AND {not_open}")
        marks = ",".join("?" * len(RETRY_STATUSES))
        rec.execute(f"UPDATE rows SET status='PENDING' WHERE status IN ({marks}) AND {in_manifest}",
                    RETRY_STATUSES)
        rec.execute(f"UPDATE rows SET status='PENDING' WHERE status='UNKNOWN' AND {not_open}")
        return rec.statements

    def staged_changed(self) -> bool:
        """Whether the staged manifest differs from the one the ledger held before (other
        rows, order or pins), or brought rows the ledger did not know."""
        digest = self._digest.hexdigest() if self._digest is not None else ""
        found = self._wdb.execute("SELECT value FROM meta WHERE key='manifest_digest'").fetchone()
        return self._inserted > 0 or found is None or found[0] != digest

    def staged_known(self) -> int:
        """Rows of the staged manifest (distinct copies) the ledger knew before staging."""
        distinct = self._wdb.execute("SELECT count(DISTINCT key) FROM manifest").fetchone()[0]
        return int(distinct) - self._inserted

    def staged_image_sets(self) -> list[tuple[str, str]]:
        """(data store, image set) of every row of the staged manifest that may still be
        written, as the open staging transaction sees it (what the machine's holds take)."""
        return list(self._held(self._wdb))

    def commit_manifest(self, *, fresh: bool = False) -> None:
        """Prepare (if not done) and commit the staged manifest through the committer."""
        statements = self.prepare_manifest(fresh=fresh)
        self.commit_staged(statements)

    def commit_staged(self, statements: list[list[Any]]) -> None:
        changed = self.staged_changed()
        if changed:
            self._wdb.execute("INSERT OR REPLACE INTO meta VALUES ('manifest_digest', ?)",
                              (self._digest.hexdigest() if self._digest is not None else "",))
        commit = getattr(self.committer, "commit_staged", None)
        if commit is None:
            self._wdb.execute("COMMIT")
        else:
            commit(self._wdb, statements, changed=changed)
        self._digest = None

    def rollback_manifest(self) -> None:
        if self._wdb.in_transaction:
            self._wdb.execute("ROLLBACK")
        self._digest = None

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

    @staticmethod
    def _held(db: sqlite3.Connection) -> Iterator[tuple[str, str]]:
        """(data store, image set) of every row of the manifest that may still be written."""
        yield from db.execute(
            "SELECT DISTINCT r.datastore_id, r.source_image_set_id FROM manifest m JOIN rows r "
            "ON r.key = m.key WHERE r.status NOT IN ('SUCCEEDED', 'SKIPPED', 'FAILED') "
            "UNION SELECT DISTINCT r.datastore_id, r.destination_image_set_id FROM manifest m "
            "JOIN rows r ON r.key = m.key WHERE r.status NOT IN ('SUCCEEDED', 'SKIPPED', "
            "'FAILED') AND r.destination_image_set_id IS NOT NULL")
