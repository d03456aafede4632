"""Machine-wide record of the image sets that live runs may write, so that two runs on one
machine never copy into (or from) the same image set at once, whatever their journals or
manifests.

State lives in the batchcopy state directory (`state_dir()`): `$BATCHCOPY_STATE_DIR`, else
`$XDG_STATE_HOME/batchcopy`, else `~/.local/state/batchcopy`. It holds the default journals
(`journals/`) and `holds.sqlite`:

    owners(owner, pid, manifest, journal, started_at)   one line per live run
    holds(scope, datastore_id, image_set_id, owner)       what each live run may write

A run is alive while it holds an exclusive `flock` on `owners/<owner>.lock`; the kernel
drops it when the process dies (kill -9 included), so a dead run's holds are swept by the
next run that looks. Registration is one `BEGIN IMMEDIATE` transaction: sweep the dead,
look for image sets another live run holds, insert ours. Two runs starting together are
serialised by SQLite; the second sees the first's holds and is refused.

`scope` separates endpoints (region + endpoint URL): two emulators on one machine may
use the same ids. Runs on other machines are not seen: that hazard is documented in the
README, and the presence check (`--skip-present`) is the defence offered for it.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, pid INTEGER NOT NULL,
    manifest TEXT NOT NULL, journal TEXT NOT NULL, started_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS holds (scope TEXT NOT NULL, datastore_id TEXT NOT NULL,
    image_set_id TEXT NOT NULL, owner TEXT NOT NULL,
    PRIMARY KEY (scope, datastore_id, image_set_id));
CREATE INDEX IF NOT EXISTS holds_owner ON holds(owner);
"""


def state_dir() -> Path:
    explicit = os.environ.get("BATCHCOPY_STATE_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "batchcopy"


def state_unwritable(exc: BaseException) -> str:
    """The one line for a state directory where the holds cannot be written."""
    why = getattr(exc, "strerror", None) or str(exc)
    return (f"the state directory {state_dir()} cannot be written ({why}): it keeps the record "
            "of this machine's live runs (holds.sqlite); make it writable, or set "
            "BATCHCOPY_STATE_DIR to a directory that is (nothing was sent)")


class HeldElsewhere(Exception):
    """Image sets of this manifest are held by another live run on this machine."""

    def __init__(self, holders: list[dict[str, Any]]) -> None:
        self.holders = holders
        parts = []
        for h in holders:
            sample = ", ".join(h["sample"])
            parts.append(f"{h['count']} image set(s) (e.g. {sample}) are held by the run with "
                         f"pid {h['pid']} (manifest {h['manifest']}, journal {h['journal']})")
        super().__init__("; ".join(parts))


@dataclass(frozen=True)
class Owner:
    owner: str
    pid: int
    manifest: str
    journal: str


class Holds:
    """This process's registration as a live run (see the module doc)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or state_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "owners").mkdir(exist_ok=True)
        self.path = self.dir / "holds.sqlite"
        self.owner: Owner | None = None
        self._lock_fh: Any = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, timeout=60)
        db.execute("PRAGMA busy_timeout=60000")
        db.executescript(_SCHEMA)
        return db

    def acquire(self, scope: str, image_sets: Iterable[tuple[str, str]], *, manifest: str,
                journal: str) -> int:
        """Hold `image_sets` for this run, or raise HeldElsewhere (holding nothing)."""
        owner = Owner(uuid.uuid4().hex, os.getpid(), manifest, journal)
        fh = open(self.dir / "owners" / f"{owner.owner}.lock", "a+")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            self._sweep_dead(db)
            db.execute("CREATE TEMP TABLE mine (datastore_id TEXT, image_set_id TEXT, "
                       "PRIMARY KEY (datastore_id, image_set_id))")
            db.executemany("INSERT OR IGNORE INTO mine VALUES (?, ?)", image_sets)
            clashes = db.execute(
                "SELECT h.owner, o.pid, o.manifest, o.journal, count(*), "
                "group_concat(h.image_set_id) FROM holds h JOIN mine m "
                "ON h.datastore_id = m.datastore_id AND h.image_set_id = m.image_set_id "
                "JOIN owners o ON o.owner = h.owner WHERE h.scope = ? GROUP BY h.owner",
                (scope,)).fetchall()
            if clashes:
                db.execute("ROLLBACK")
                fh.close()
                os.unlink(self.dir / "owners" / f"{owner.owner}.lock")
                raise HeldElsewhere([
                    {"owner": c[0], "pid": c[1], "manifest": c[2], "journal": c[3],
                     "count": c[4], "sample": (c[5] or "").split(",")[:3]} for c in clashes])
            db.execute("INSERT INTO owners VALUES (?, ?, ?, ?, ?)",
                       (owner.owner, owner.pid, manifest, journal, time.time()))
            cur = db.execute("INSERT INTO holds SELECT ?, datastore_id, image_set_id, ? FROM mine",
                             (scope, owner.owner))
            held = cur.rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()
        self.owner, self._lock_fh = owner, fh
        return held

    def release(self) -> None:
        """Drop this run's holds. Best effort: should the state directory refuse the write
        (it filled up, it became read-only), the next run sweeps them, as after a kill."""
        if self.owner is None:
            return
        try:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM holds WHERE owner = ?", (self.owner.owner,))
                db.execute("DELETE FROM owners WHERE owner = ?", (self.owner.owner,))
                db.execute("COMMIT")
            finally:
                db.close()
        except (OSError, sqlite3.Error):
            pass
        lock = self.dir / "owners" / f"{self.owner.owner}.lock"
        self._lock_fh.close()
        try:
            lock.unlink(missing_ok=True)
        except OSError:
            pass
        self.owner, self._lock_fh = None, None

    def _sweep_dead(self, db: sqlite3.Connection) -> None:
        for (owner,) in db.execute("SELECT owner FROM owners").fetchall():
            lock = self.dir / "owners" / f"{owner}.lock"
            if _alive(lock):
                continue
            db.execute("DELETE FROM holds WHERE owner = ?", (owner,))
            db.execute("DELETE FROM owners WHERE owner = ?", (owner,))
            lock.unlink(missing_ok=True)


def _alive(lock: Path) -> bool:
    """Whether a process still holds the flock on `lock` (a missing file: dead)."""
    try:
        fh = open(lock, "a+")
    except OSError:
        return False
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        fh.close()
    return False
