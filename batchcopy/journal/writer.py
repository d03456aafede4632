"""How writes reach the ledger: each write is a function run in a transaction, and a
committer makes a batch of them durable at once (group commit).

    Write        one write: `fn(db)`, the future its caller awaits, and how urgent it is
    Committer    makes a batch durable. LocalCommitter: one SQLite transaction, one fsync.
                 (journal/s3log.py's S3Committer also puts the batch in S3 first.)
    GroupWriter  the writer thread: takes the writes queued so far, commits them together,
                 and only then resolves the futures; writes commit in the order they were
                 queued. A committer with an `interval_s` starts a commit no sooner than that
                 after the previous one ended (what arrives meanwhile joins it): a bound on
                 commits per second, and no wait at all for a write that finds it idle
    Recorder     what the S3 committer passes to `fn` instead of the connection: it runs
                 each statement and keeps the writes (INSERT, UPDATE, DELETE) with their
                 parameters, to be replayed elsewhere in the same order

Each write runs in its own savepoint: a write that raises fails alone (its statements are
rolled back and not recorded) and the others of the batch stand. A write whose awaiting
task was cancelled before it began is dropped (every write is a consistent step on its
own); once running, it can no longer be cancelled.

Urgency: an `urgent` write (a call recorded before its request leaves) must be durable
where the state lives before its future resolves, or fail (journal/s3commit.py lets the
others be kept locally when S3 stops taking writes). `flush` writes commit at once.
"""

from __future__ import annotations

import concurrent.futures
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Statement = list[Any]  # [sql, params] or [sql, [params, ...], 1] (executemany)


@dataclass
class Write:
    fn: Callable[[Any], Any]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    urgent: bool = False  # must be durable where the state lives before it resolves
    flush: bool = False  # commit at once (not after the interval)


@dataclass
class Applied:
    write: Write
    ok: bool
    value: Any
    statements: list[Statement] = field(default_factory=list)


class Recorder:
    """A connection that records the writes it runs (see the module doc)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.statements: list[Statement] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        cur = self.db.execute(sql, params)
        if is_write(sql):
            self.statements.append([sql, list(params)])
        return cur

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        rows = [list(p) for p in seq]
        cur = self.db.executemany(sql, rows)
        if rows and is_write(sql):
            self.statements.append([sql, rows, 1])
        return cur


def is_write(sql: str) -> bool:
    return sql.lstrip()[:7].upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE"))


def replay(db: sqlite3.Connection, statements: Iterable[Statement]) -> None:
    """Run recorded statements again, in order (inside the caller's transaction)."""
    for st in statements:
        if len(st) > 2 and st[2]:
            db.executemany(st[0], st[1])
        else:
            db.execute(st[0], st[1])


def apply_writes(db: sqlite3.Connection, writes: list[Write], *,
                 record: bool = False) -> list[Applied]:
    """Run each write in its own savepoint, inside the caller's open transaction."""
    out: list[Applied] = []
    for w in writes:
        db.execute("SAVEPOINT w")
        target: Any = Recorder(db) if record else db
        try:
            value = w.fn(target)
        except Exception as exc:  # this write fails alone; the others stand
            db.execute("ROLLBACK TO w")
            db.execute("RELEASE w")
            out.append(Applied(w, False, exc))
            continue
        db.execute("RELEASE w")
        out.append(Applied(w, True, value, target.statements if record else []))
    return out


def resolve(applied: list[Applied]) -> None:
    for a in applied:
        if a.write.future.done():
            continue
        if a.ok:
            a.write.future.set_result(a.value)
        else:
            a.write.future.set_exception(a.value)


def fail_all(writes: Iterable[Write], exc: BaseException) -> None:
    for w in writes:
        if not w.future.done():
            w.future.set_exception(exc)


class Committer(Protocol):
    interval_s: float  # the least time from the end of one commit to the start of the next

    def commit(self, db: sqlite3.Connection, writes: list[Write]) -> None:
        """Make `writes` durable and resolve their futures (each with its value or error)."""


class LocalCommitter:
    """The ledger is the SQLite file: one transaction, one commit (one fsync) per batch."""

    interval_s = 0.0

    def commit(self, db: sqlite3.Connection, writes: list[Write]) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
            applied = apply_writes(db, writes)
            db.execute("COMMIT")
        except Exception as exc:  # the commit itself failed (disk full, I/O error)
            rollback(db)
            fail_all(writes, exc)
            return
        resolve(applied)


def rollback(db: sqlite3.Connection) -> None:
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        pass


class GroupWriter:
    """The group-commit thread (see the module doc)."""

    _STOP = object()

    def __init__(self, db: sqlite3.Connection, committer: Committer) -> None:
        self.db = db
        self.committer = committer
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="batchcopy-journal", daemon=True)
        self.commits = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, write: Write) -> concurrent.futures.Future[Any]:
        self._queue.put(write)
        return write.future

    def stop(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join()

    def _loop(self) -> None:
        ended = float("-inf")  # when the previous commit ended
        while True:
            item = self._queue.get()
            stop = item is self._STOP
            batch: list[Write] = [] if stop else [item]
            now = time.monotonic()
            deadline = now if stop or item.flush else max(now, ended + self.committer.interval_s)
            while True:
                wait = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is self._STOP:
                    stop = True
                    deadline = time.monotonic()
                    continue
                batch.append(nxt)
                if nxt.flush:
                    deadline = time.monotonic()
            batch = [w for w in batch if w.future.set_running_or_notify_cancel()]
            if batch:
                self.committer.commit(self.db, batch)
                self.commits += 1
                ended = time.monotonic()
            if stop:
                return
