"""Where a ledger lives (`--state`, env BATCHCOPY_STATE), and opening it: to write (a run,
an undo: the state's lock or lease first, before anything is touched) or to read (report,
verify, status: no lock).

    a directory   (default: the state directory, journal/holds.py's `state_dir()`)
                  `<dir>/ledger.sqlite`, locked by `<dir>/ledger.sqlite.lock` (flock)
    a file        `--journal PATH`: the same ledger, at a name of your choosing
    s3://b/p/     the ledger in S3 (journal/s3log.py), one live writer at a time by its
                  lease (journal/lease.py); the local disk holds only a cache,
                  `<state dir>/cache/s3-<hash of the URL>/ledger.sqlite`, kept current by
                  the writer (a flock on `cache.lock` keeps two processes of one machine
                  from writing it at once; a reader that finds it locked reads it as the
                  live writer keeps it)

One state is one ledger, keyed by what rows copy: every manifest run against it shares it,
one run at a time. Opening a new directory state imports the per-manifest journals of
earlier versions found in its `journals/` (journal/legacy.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchcopy.journal.holds import state_dir
from batchcopy.journal.journal import Journal, JournalError
from batchcopy.journal.lease import DEFAULT_TTL_S, Holder, Lease, LeaseHeld
from batchcopy.journal.locks import LockedError, take_lock
from batchcopy.journal.s3io import S3, StateError, StateUnavailable, parse_url
from batchcopy.journal.schema import inspect

LEDGER = "ledger.sqlite"
REPORT_SUFFIXES = (".parquet", ".pq")


class StateLocked(Exception):
    """Another live run holds the state (its lock or its lease): exit 4."""


@dataclass(frozen=True)
class Location:
    """A state: kind 'dir' | 'file' | 's3', and its URL (an absolute path, or s3://b/p/)."""

    kind: str
    url: str

    @property
    def ledger(self) -> Path:
        if self.kind == "dir":
            return Path(self.url) / LEDGER
        if self.kind == "file":
            return Path(self.url)
        return cache_dir(self.url) / LEDGER

    @property
    def name(self) -> str:
        """A short, file-name-safe name (for default report names)."""
        if self.kind == "file":
            base = Path(self.url).name
            for suffix in (".journal.sqlite", ".sqlite", ".journal"):
                base = base.removesuffix(suffix)
        else:
            base = self.url.rstrip("/").rsplit("/", 1)[-1] or "state"
        return safe_name(base or "state")

    def __str__(self) -> str:
        return self.url


def safe_name(text: str, limit: int = 80) -> str:
    """`text` as a file name part: no control characters or separators, at most `limit`
    characters (a long name keeps its start and a digest of the whole)."""
    cleaned = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in text).strip(". ")
    cleaned = cleaned or "manifest"
    if len(cleaned.encode()) <= limit:
        return cleaned
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return cleaned.encode()[: limit - 9].decode(errors="ignore") + "-" + digest


def cache_dir(url: str) -> Path:
    return state_dir() / "cache" / f"s3-{hashlib.blake2b(url.encode(), digest_size=8).hexdigest()}"


def resolve(state: str | None) -> Location:
    """--state / BATCHCOPY_STATE / the default state directory."""
    text = (state or os.environ.get("BATCHCOPY_STATE", "")).strip()
    if not text:
        return Location("dir", str(state_dir().expanduser().absolute()))
    if text.startswith("s3://"):
        bucket, prefix = parse_url(text)
        return Location("s3", f"s3://{bucket}/{prefix}")
    if "://" in text:
        raise StateError(f"--state {text!r}: a local directory or s3://bucket/prefix/")
    path = Path(text).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise StateError(f"--state {text!r} is a file: --state names a directory (or "
                         "s3://bucket/prefix/); a ledger file is --journal")
    return Location("dir", str(path))


def source_location(source: str) -> Location | None:
    """The state a command's SOURCE names, or None if it is a report: s3://b/p/ (not a
    .parquet), a directory, or a ledger file (.sqlite / .journal, or any SQLite file)."""
    if source.startswith("s3://"):
        if source.lower().endswith(REPORT_SUFFIXES):
            return None
        return resolve(source)
    path = Path(source).expanduser()
    if path.is_dir():
        return Location("dir", str(path.absolute()))
    if source.endswith((".sqlite", ".journal")) or inspect(path) == "sqlite":
        return Location("file", str(path.absolute()))
    return None


@dataclass
class OpenState:
    """An opened state: its journal, and what must be given back at the end."""

    location: Location
    journal: Journal
    created: bool = False  # the ledger did not exist before this open
    lease: Lease | None = None
    notes: list[str] = field(default_factory=list)  # things worth saying (a lease taken over...)
    log: Any = None  # an s3:// state's S3Log (journal/s3log.py)
    _locks: list[Any] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """What an s3:// state cost this process so far: requests, bytes, segments ({}
        for a local state)."""
        if self.log is None:
            return {}
        s3 = self.log.s3
        return {"s3_requests": s3.requests, "bytes_up": s3.bytes_up, "bytes_down": s3.bytes_down,
                "segment": self.log.seq, "segment_bytes": self.log.bytes_logged,
                "compactions": self.log.compactions}

    def close(self) -> None:
        try:
            self.journal.close()
        finally:
            if self.lease is not None:
                self.lease.release()
            for fh in self._locks:
                fh.close()
            self._locks.clear()

    def discard(self) -> None:
        """Close, and remove a local ledger this open created (a set-up mistake after it)."""
        path = self.journal.path
        self.close()
        if self.created and self.location.kind != "s3":
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(str(path) + suffix).unlink(missing_ok=True)


def open_for_writing(location: Location, holder: Holder, *, lease_ttl_s: float = DEFAULT_TTL_S,
                     fresh: bool = False, profile: str | None = None,
                     create: bool = True) -> OpenState:
    """The state's lock (or lease) first, then its ledger: StateLocked if another run holds
    it, StateError / StateUnavailable if it cannot be used (nothing touched). `create`:
    a state with no ledger yet is made (else StateError)."""
    if location.kind == "s3":
        return _open_s3(location, holder, lease_ttl_s, profile, create)
    ledger = location.ledger
    option = "--journal" if location.kind == "file" else "--state"
    lock_path = Path(str(ledger) + ".lock")
    lock_existed = lock_path.exists()
    try:
        ledger.parent.mkdir(parents=True, exist_ok=True)
        lock = take_lock(lock_path, holder.to_json(), what=f"journal {ledger}")
    except LockedError as exc:
        raise StateLocked(str(exc)) from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        if location.kind == "dir":
            raise StateError(f"the state directory {location.url} cannot be written ({why}): it "
                             f"holds the ledger ({LEDGER}); make it writable, or give another "
                             "--state (or BATCHCOPY_STATE_DIR); nothing was sent") from None
        raise StateError(f"{option} {location.url!r} cannot be created: {why}; choose another "
                         f"{option}") from None
    try:
        existed = inspect(ledger) not in ("missing", "empty")
        if not existed and not create:
            raise StateError(f"no ledger at {ledger}: nothing has run with this state")
        try:
            journal = Journal(ledger, create=True, check=existed)
        except JournalError as exc:
            if not (fresh and existed):
                hint = ("pass --fresh to set it aside and start over" if existed
                        else "choose another --journal or --state")
                raise StateError(f"{exc}; {hint}") from None
            kept = _set_aside(ledger)
            journal = Journal(ledger, create=True)
            existed = False
            note = f"--fresh: the unusable ledger is kept as {kept}"
        else:
            note = ""
        opened = OpenState(location, journal, created=not existed, _locks=[lock])
        if note:
            opened.notes.append(note)
        if opened.created and location.kind == "dir":
            from batchcopy.journal.legacy import import_journals

            found = import_journals(journal, Path(location.url) / "journals")
            if found:
                opened.notes.append(f"imported the journals of earlier batchcopy versions "
                                    f"from {Path(location.url) / 'journals'}: {found}")
        return opened
    except BaseException:
        lock.close()
        if not lock_existed:
            lock_path.unlink(missing_ok=True)
        raise


def _set_aside(ledger: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    kept = Path(f"{ledger}.{stamp}.old")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(ledger) + suffix)
        if part.exists():
            part.rename(Path(f"{kept}{suffix}"))
    return kept


def _open_s3(location: Location, holder: Holder, ttl: float, profile: str | None,
             create: bool) -> OpenState:
    from batchcopy.journal.s3commit import S3Committer
    from batchcopy.journal.s3log import S3Log

    s3 = S3(location.url, profile=profile)
    s3.check_bucket()
    if not create and not S3Log(s3, location.ledger.parent).exists():
        raise StateError(f"no state at {location}: nothing has run there yet")
    lease = Lease(s3, holder, ttl)
    try:
        lease.acquire()
    except LeaseHeld as exc:
        raise StateLocked(str(exc)) from None
    locks: list[Any] = []
    try:
        locks.append(_cache_lock(location, wait_s=60.0))
        log = S3Log(s3, location.ledger.parent, holder.run)
        log.sync(location.ledger)
        committer = S3Committer(log, lease)
        journal = Journal(location.ledger, create=False, committer=committer)
    except BaseException:
        for fh in locks:
            fh.close()
        lease.release()
        raise
    opened = OpenState(location, journal, created=log.seq == 0, lease=lease, log=log,
                       _locks=locks)
    if lease.taken_over is not None:
        opened.notes.append(f"took over the expired lease of {lease.taken_over.holder.describe()} "
                            f"(last renewed {time.strftime('%H:%M:%S UTC', time.gmtime(lease.taken_over.renewed_at))}); "
                            "its open calls are settled first")
    return opened


def _cache_lock(location: Location, *, wait_s: float) -> Any:
    """The flock on the cache's `cache.lock`, waiting up to `wait_s` for a reader syncing it."""
    directory = location.ledger.parent
    directory.mkdir(parents=True, exist_ok=True)
    fh = open(directory / "cache.lock", "a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except BlockingIOError:
            if time.monotonic() > deadline:
                fh.close()
                raise StateError(f"the local cache {directory} of {location} stays locked by "
                                 "another batchcopy process") from None
            time.sleep(0.1)


def open_for_reading(location: Location, *, profile: str | None = None) -> OpenState:
    """The ledger to read, no lock taken: a local one as it is; an S3 one brought up to date
    in the cache (or read as a live writer on this machine keeps it)."""
    if location.kind != "s3":
        if inspect(location.ledger) in ("missing", "empty"):
            raise StateError(f"no ledger at {location.ledger}: nothing has run with this state")
        try:
            return OpenState(location, Journal(location.ledger, create=False))
        except JournalError as exc:
            raise StateError(str(exc)) from None
    from batchcopy.journal.s3log import S3Log

    s3 = S3(location.url, profile=profile)
    s3.check_bucket()
    log = S3Log(s3, location.ledger.parent)
    if not log.exists():
        raise StateError(f"no state at {location}: nothing has run there yet")
    try:
        lock = _cache_lock(location, wait_s=0.0)
    except StateError:  # a writer on this machine keeps the cache current: read it as it is
        return OpenState(location, Journal(location.ledger, create=False), log=log)
    try:
        log.sync(location.ledger)
        return OpenState(location, Journal(location.ledger, create=False), log=log, _locks=[lock])
    except BaseException:
        lock.close()
        raise


__all__ = ["Location", "OpenState", "StateError", "StateLocked", "StateUnavailable",
           "open_for_reading", "open_for_writing", "resolve", "source_location"]
