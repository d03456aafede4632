"""The committer of an `s3://` state (journal/writer.py's Committer): a group commit is
durable when its segment is in S3, and only then in the local cache.

    commit       BEGIN; every write of the batch, recorded; the segment PUT with
                 If-None-Match while the lease is valid (journal/s3log.py); the cache's
                 last segment noted; COMMIT; the futures resolved. A commit starts at least
                 `interval_s` (0.15 s; BATCHCOPY_S3_INTERVAL) after the previous one ended,
                 so a write that finds the writer idle goes at once, and under load
                 segments carry what arrived meanwhile: at 10 copies/s, about one segment
                 per 1.5 copies, each record waiting at most the interval.
    local only   once S3 cannot take a segment (errors and timeouts past the retry budget,
                 the lease lost, another writer): from then on urgent writes fail with
                 StateUnavailable (their call is never sent) and the others are applied to
                 the cache alone, which is marked *diverged* (the next open rebuilds it from
                 S3); `on_unavailable` callbacks run once (the run stops sending, exit 3).
                 What S3 has is always a prefix of what the cache has: the calls S3 shows
                 open are settled by the next run, on any machine.
    staging      `commit_staged`: a manifest the ledger already held, row for row, logs only
                 the statements that reset its rows; a new or changed one is a snapshot
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from batchcopy.journal.lease import Lease
from batchcopy.journal.s3io import StateError, StateUnavailable
from batchcopy.journal.s3log import S3Log
from batchcopy.journal.writer import Applied, Write, apply_writes, fail_all, resolve, rollback


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("BATCHCOPY_S3_INTERVAL", "") or 0.15))
    except ValueError:
        return 0.15


class S3Committer:
    """See the module doc."""

    def __init__(self, log: S3Log, lease: Lease | None) -> None:
        self.log = log
        self.lease = lease
        self.interval_s = _interval()
        self.local_only: str | None = None  # why S3 takes no more writes
        self.on_unavailable: list[Callable[[str], None]] = []
        if lease is not None:
            lease.on_lost.append(self.go_local)

    def go_local(self, reason: str) -> None:
        """From now on S3 takes no writes from this process (see the module doc)."""
        if self.local_only is not None:
            return
        self.local_only = reason
        for callback in list(self.on_unavailable):
            try:
                callback(reason)
            except Exception:  # noqa: BLE001 - one callback must not stop the others
                pass

    def _until(self) -> float | None:
        return None if self.lease is None else self.lease.valid_until

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def commit(self, db: sqlite3.Connection, writes: list[Write]) -> None:
        if self.local_only is not None:
            self._locally(db, writes)
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            applied = apply_writes(db, writes, record=True)
        except Exception as exc:  # the cache itself failed (disk full, I/O error)
            rollback(db)
            fail_all(writes, exc)
            return
        statements = [st for a in applied if a.ok for st in a.statements]
        if statements:
            try:
                self._check_lease()
                self.log.append(statements, until=self._until())
            except (StateUnavailable, StateError) as exc:
                rollback(db)
                self.go_local(str(exc))
                self._locally(db, writes)
                return
            db.execute("INSERT OR REPLACE INTO meta VALUES ('s3_seq', ?)", (str(self.log.seq),))
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:  # S3 has the segment; the cache is behind: rebuild it
            rollback(db)
            self.go_local(f"the local cache could not be written: {exc}")
            fail_all(writes, exc)
            return
        if self.lease is not None and not self.lease.valid():
            # the segment is in S3, but the lease ran out while it was written: an urgent
            # write's call must not leave now (the next run settles it, as any open call)
            self.go_local(self.lease.lost_reason or "the lease ran out while a write was in "
                          "flight")
            applied = [_refused(a, self.local_only or "") for a in applied]
        resolve(applied)
        self.log.maybe_compact(db)

    def _locally(self, db: sqlite3.Connection, writes: list[Write]) -> None:
        """S3 takes no more writes: the cache alone (marked diverged); urgent writes fail."""
        reason = self.local_only or "the state cannot be written"
        urgent = [w for w in writes if w.urgent]
        fail_all(urgent, StateUnavailable(reason))
        rest = [w for w in writes if not w.urgent]
        if not rest:
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            applied = apply_writes(db, rest)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('diverged', ?)", (reason,))
            db.execute("COMMIT")
        except Exception as exc:
            rollback(db)
            fail_all(rest, exc)
            return
        resolve(applied)

    def commit_staged(self, db: sqlite3.Connection, statements: list[list[object]], *,
                      changed: bool) -> None:
        """Commit a staged manifest (journal.Journal.commit_staged): StateUnavailable (the
        cache rolled back or marked diverged) if S3 does not take it."""
        if self.local_only is not None:
            rollback(db)
            raise StateUnavailable(self.local_only)
        try:
            self._check_lease()
            if not changed:
                if statements:
                    self.log.append(statements, until=self._until())
                db.execute("INSERT OR REPLACE INTO meta VALUES ('s3_seq', ?)", (str(self.log.seq),))
                db.execute("COMMIT")
                return
        except (StateUnavailable, StateError) as exc:
            rollback(db)
            self.go_local(str(exc))
            raise StateUnavailable(str(exc)) from None
        seq = self.log.seq + 1
        db.execute("INSERT OR REPLACE INTO meta VALUES ('s3_seq', ?)", (str(seq),))
        db.execute("COMMIT")
        try:
            self._check_lease()
            self.log.append_snapshot(db, seq)
        except (StateUnavailable, StateError) as exc:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('diverged', ?)", (str(exc),))
            self.go_local(str(exc))
            raise StateUnavailable(str(exc)) from None

    def close(self, db: sqlite3.Connection) -> None:
        """At the end: a compaction under way finishes (the log after the last snapshot is
        about a compaction period: the next machine replays it in parallel)."""
        self.log.finish()


def _refused(a: Applied, reason: str) -> Applied:
    if a.ok and a.write.urgent:
        return Applied(a.write, False, StateUnavailable(reason), a.statements)
    return a
