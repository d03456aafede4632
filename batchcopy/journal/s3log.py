"""The log and snapshots of an `s3://` state: the ledger kept in S3, the local SQLite file
only a cache of it.

Layout under `s3://bucket/prefix/`:

    lease.json                            who holds the state (journal/lease.py)
    log/000000000001.json.gz              segments: one group commit each, named by sequence,
    log/000000000002.json.gz ...          created with `If-None-Match: *`
    snapshots/000000000042.sqlite.gz      the whole ledger (gzip of the SQLite file) after
                                          segment 42
    stage/000000000007-<nonce>.sqlite.gz  a staged manifest's ledger, which segment 7 names
                                          (copied to snapshots/000000000007.sqlite.gz once
                                          segment 7 is claimed, then deleted)

A segment is gzip'd JSON: `{"v": 1, "seq": n, "run": <holder's run id>, "statements":
[[sql, params], [sql, [params, ...], 1], ...]}` -- the INSERT/UPDATE/DELETE statements the
group commit ran on the writer's cache (journal/writer.py's Recorder), replayed in order;
or `{"v": 1, "seq": n, "run": ..., "snapshot": "stage/..."}` -- the ledger after staging a
new manifest, whole (rows that the manifest brings and the manifest table are bulk; a rerun
of the same manifest logs only the statements that reset its rows). Ledger state n is
state n-1 plus segment n; every write is a deterministic function of the ledger and its
parameters (times are parameters), so any machine replays the same ledger.

Conditional creation makes the log linear: two writers can never both claim segment n
(the second's PUT is refused, and it stops: it is no longer the state's writer). A PUT
whose answer was lost is checked by reading the segment back (journal/s3io.py).

Reading (`sync`): the cache (its last segment is in its meta table) is brought up to date:
the newest snapshot if the cache is behind it (or missing, or *diverged*: written locally
after S3 stopped taking writes), then every segment after it, fetched eight at a time and
applied in order; a gap in the sequence is an error.

Compaction: after `compact_every` segments (500; BATCHCOPY_S3_COMPACT_EVERY) the writer
snapshots its cache at a segment boundary (SQLite's backup) and a helper thread uploads it
and deletes what the snapshot before it made obsolete (segments, stage blobs, older
snapshots): opening a state needs one snapshot and the segments after it (a compaction
period's, plus those written while the upload ran; a compaction due meanwhile waits for
the running one), whatever its history.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import shutil
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

from batchcopy.journal.s3io import S3, StateError, StateUnavailable
from batchcopy.journal.schema import SCHEMA_VERSION, add_columns, create_ledger, inspect
from batchcopy.journal.writer import replay


class LogConflict(StateUnavailable):
    """Another writer claimed a segment: this process no longer writes the state."""


def seg_key(seq: int) -> str:
    return f"log/{seq:012d}.json.gz"


def snap_key(seq: int) -> str:
    return f"snapshots/{seq:012d}.sqlite.gz"


def seq_of(key: str) -> int:
    return int(key.rsplit("/", 1)[-1].split(".", 1)[0].split("-", 1)[0])


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "") or default))
    except ValueError:
        return default


class S3Log:
    """One state's log and snapshots (see the module doc), written through `workdir`."""

    def __init__(self, s3: S3, workdir: Path, run: str = "") -> None:
        self.s3 = s3
        self.workdir = workdir
        self.run = run
        self.seq = 0  # the last segment in the cache (and, for the writer, in S3)
        self.snapshot_seq = 0  # the newest snapshot
        self.segments_since = 0  # segments after the newest snapshot
        self.bytes_logged = 0
        self.compact_every = _env_int("BATCHCOPY_S3_COMPACT_EVERY", 500)
        self._compactor: threading.Thread | None = None
        self._lock = threading.Lock()  # the counters, between the writer and the compactor
        self.compactions = 0

    # ---- reading -------------------------------------------------------------------
    def exists(self) -> bool:
        return bool(self.s3.keys("snapshots/") or self.s3.keys("log/"))

    def sync(self, cache: Path) -> int:
        """Bring the cache file up to date with S3 (see the module doc); the last segment."""
        cached = cached_seq(cache)
        snaps = sorted(seq_of(k) for k in self.s3.keys("snapshots/") if k.endswith(".sqlite.gz"))
        newest = snaps[-1] if snaps else 0
        segs = self._segments(after=cached or 0)
        if cached is None or (newest > cached and (not segs or segs[0] != cached + 1)):
            if newest:
                self._load(snap_key(newest), cache, newest)
            else:
                empty_cache(cache)
            cached = newest
            segs = [s for s in segs if s > cached]
        for i, seq in enumerate(segs):
            if seq != cached + 1 + i:
                raise StateError(f"the log of {self.s3.where()} has a gap: segment "
                                 f"{cached + 1 + i} is missing (found {seq})")
        self._apply(cache, segs)
        self.seq = cached + len(segs)
        self.snapshot_seq = newest
        self.segments_since = self.seq - newest
        return self.seq

    def _segments(self, after: int) -> list[int]:
        return [seq_of(k) for k in self.s3.keys("log/", after=seg_key(after) if after else None)
                if k.endswith(".json.gz")]

    def _apply(self, cache: Path, segs: list[int]) -> None:
        if not segs:
            return
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            bodies = pool.map(lambda s: (s, self.s3.get(seg_key(s))), segs)
            db = _open(cache)
            try:
                for seq, found in bodies:
                    if found is None:
                        raise StateError(f"segment {seq} of {self.s3.where()} vanished while "
                                         "it was read (compacted meanwhile?): try again")
                    doc = json.loads(gzip.decompress(found.body))
                    if "snapshot" in doc:
                        db.close()
                        self._load_staged(str(doc["snapshot"]), cache, seq)
                        db = _open(cache)
                        continue
                    db.execute("BEGIN IMMEDIATE")
                    replay(db, doc["statements"])
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('s3_seq', ?)", (str(seq),))
                    db.execute("COMMIT")
            finally:
                db.close()

    def _load_staged(self, blob: str, cache: Path, seq: int) -> None:
        """A staged manifest's ledger: its blob, or (once the writer has copied it there
        and deleted the blob) the snapshot of the same segment."""
        try:
            self._load(blob, cache, seq, missing_ok=True)
        except FileNotFoundError:
            self._load(snap_key(seq), cache, seq)

    def _load(self, key: str, cache: Path, seq: int, *, missing_ok: bool = False) -> None:
        """Replace the cache with the snapshot `key` (the ledger after segment `seq`)."""
        packed, plain = self.workdir / ".snapshot.gz", self.workdir / ".snapshot.sqlite"
        try:
            try:
                self.s3.download(key, packed)
            except FileNotFoundError:
                if missing_ok:
                    raise
                raise StateError(f"{self.s3.where(key)} is missing: the state is damaged") from None
            with gzip.open(packed, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            found = cached_seq(plain, remove=False)
            if found != seq:
                raise StateError(f"{self.s3.where(key)} holds the ledger after segment {found}, "
                                 f"not {seq}: the state is damaged")
            remove_cache(cache)
            os.replace(plain, cache)
        finally:
            packed.unlink(missing_ok=True)
            plain.unlink(missing_ok=True)

    # ---- writing -----------------------------------------------------------------------
    def append(self, statements: list[Any], *, until: float | None = None) -> None:
        """Claim the next segment with these statements (LogConflict if another writer has)."""
        seq = self.seq + 1
        body = gzip.compress(json.dumps({"v": 1, "seq": seq, "run": self.run,
                                         "statements": statements},
                                        separators=(",", ":")).encode(), compresslevel=6)
        if self.s3.create(seg_key(seq), body, until=until) is None:
            raise LogConflict(f"segment {seq} of {self.s3.where()} was written by another run: "
                              "this run no longer holds the state")
        with self._lock:
            self.seq = seq
            self.segments_since += 1
            self.bytes_logged += len(body)

    def append_snapshot(self, db: sqlite3.Connection, seq: int) -> None:
        """Claim segment `seq` as the ledger `db` holds now, whole (a staged manifest)."""
        packed = self._pack(db)
        blob = f"stage/{seq:012d}-{uuid.uuid4().hex[:12]}.sqlite.gz"
        try:
            self.s3.upload(blob, packed)
        finally:
            packed.unlink(missing_ok=True)
        body = gzip.compress(json.dumps({"v": 1, "seq": seq, "run": self.run,
                                         "snapshot": blob}).encode())
        if self.s3.create(seg_key(seq), body) is None:
            raise LogConflict(f"segment {seq} of {self.s3.where()} was written by another run")
        self.seq = seq
        self.s3.copy(blob, snap_key(seq))  # opening needs no detour through the log
        self.s3.delete([blob])  # the segment's readers fall back on the snapshot
        self._snapshotted(seq)

    def maybe_compact(self, db: sqlite3.Connection) -> None:
        """In the writer, between commits: snapshot now if the log has grown enough."""
        if self.segments_since >= self.compact_every and not self.compacting:
            self.compact(db, wait=False)

    @property
    def compacting(self) -> bool:
        return self._compactor is not None and self._compactor.is_alive()

    def compact(self, db: sqlite3.Connection, *, wait: bool = True) -> None:
        """Snapshot the ledger as of segment `seq` (upload in a helper thread)."""
        seq = self.seq
        packed = self._pack(db)

        def upload() -> None:
            try:
                self.s3.upload(snap_key(seq), packed)
                self._snapshotted(seq)
            except (StateUnavailable, StateError, OSError):
                pass  # the log still has everything: the next compaction tries again
            finally:
                packed.unlink(missing_ok=True)

        self.finish()
        self._compactor = threading.Thread(target=upload, name="batchcopy-compact", daemon=True)
        self._compactor.start()
        if wait:
            self.finish()

    def finish(self) -> None:
        if self._compactor is not None:
            self._compactor.join()
            self._compactor = None

    def _snapshotted(self, seq: int) -> None:
        """Snapshot `seq` is up: what the snapshot before it made obsolete goes."""
        with self._lock:
            previous = self.snapshot_seq
            self.snapshot_seq = max(self.snapshot_seq, seq)
            self.segments_since = self.seq - self.snapshot_seq
            self.compactions += 1
        if previous <= 0:
            return
        old = [k for k in self.s3.keys("log/") if seq_of(k) <= previous]
        old += [k for k in self.s3.keys("stage/") if seq_of(k) <= previous]
        old += [k for k in self.s3.keys("snapshots/") if seq_of(k) < previous]
        if old:
            self.s3.delete(old)

    def _pack(self, db: sqlite3.Connection) -> Path:
        """The ledger `db` holds now, backed up and gzip'd into a file of its own."""
        name = uuid.uuid4().hex[:12]
        plain, packed = self.workdir / f".pack-{name}.sqlite", self.workdir / f".pack-{name}.gz"
        try:
            target = sqlite3.connect(str(plain))
            try:
                db.backup(target)
            finally:
                target.close()
            with open(plain, "rb") as src, gzip.open(packed, "wb", compresslevel=3) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        finally:
            plain.unlink(missing_ok=True)
        return packed


def _open(cache: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(cache), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    add_columns(db)  # a snapshot of an older batchcopy, a log of a newer one
    return db


def cached_seq(cache: Path, *, remove: bool = True) -> int | None:
    """The last segment a cache holds; None (and the files removed) when it is missing,
    unreadable, of another schema, or diverged from S3."""
    if inspect(cache) != "sqlite":
        if remove:
            remove_cache(cache)
        return None
    try:
        db = sqlite3.connect(str(cache))
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.Error:
        meta = {}
    ok = "s3_seq" in meta and "diverged" not in meta and meta.get("schema_version") == SCHEMA_VERSION
    if not ok:
        if remove:
            remove_cache(cache)
        return None
    return int(meta["s3_seq"])


def empty_cache(cache: Path) -> None:
    remove_cache(cache)
    create_ledger(cache)
    db = sqlite3.connect(str(cache), isolation_level=None)
    try:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('s3_seq', '0')")
    finally:
        db.close()


def remove_cache(cache: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(cache) + suffix).unlink(missing_ok=True)
