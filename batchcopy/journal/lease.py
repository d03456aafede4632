"""The lease of an `s3://` state: one live run (or undo) per state at a time, across
machines, with no service but S3 (like Terraform's S3 backend lock, `use_lockfile`).

The object `<prefix>/lease.json` says who holds the state: host, pid, the command and its
manifest, when it started, and the lease's time to live (`--lease-ttl`, 120 s by default):

    acquire   PUT If-None-Match: *  -> held. The key exists: read it; it is expired when S3's
              clock (the answer's Date) is more than its ttl past its Last-Modified (one clock,
              S3's: no skew between machines); an expired lease is taken over with
              PUT If-Match on the ETag read (two takers: one wins, the other sees a live
              lease); a live one -> LeaseHeld, naming the holder and when it expires
    renew     every ttl/4, PUT If-Match on our last ETag (a thread, not the event loop)
    valid     until (monotonic) the start of the last successful renewal + ttl - margin
              (margin: a fifth of the ttl, at least 2 s: S3's one-second Last-Modified and
              request latency), so this process stops believing in its lease before any
              other machine may take it over
    lost      a renewal refused (someone else wrote the lease) or no renewal before `valid`
              ends: every `on_lost` callback runs once (the journal stops writing to S3, the
              run stops sending and exits 3)
    release   the keeper stops; DELETE If-Match our ETag (if that fails the lease simply
              expires)
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from batchcopy.journal.s3io import S3, StateError, StateUnavailable

LEASE_KEY = "lease.json"
DEFAULT_TTL_S = 120.0


@dataclass(frozen=True)
class Holder:
    """Who holds (or asks for) a state."""

    command: str  # run | undo
    manifest: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    run: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Holder":
        return cls(command=str(d.get("command", "run")), manifest=str(d.get("manifest", "?")),
                   host=str(d.get("host", "?")), pid=int(d.get("pid") or 0),
                   started_at=float(d.get("started_at") or 0), run=str(d.get("run", "")))

    def describe(self) -> str:
        return (f"the {self.command} of {self.manifest} on host {self.host} (pid {self.pid}, "
                f"started {utc(self.started_at)})")


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as read: its holder, when it was last written and when it expires (S3's clock)."""

    holder: Holder
    renewed_at: float
    ttl_s: float
    server_now: float

    @property
    def expires_at(self) -> float:
        return self.renewed_at + self.ttl_s

    @property
    def expired(self) -> bool:
        return self.server_now > self.expires_at


class LeaseHeld(Exception):
    """Another live run holds the state's lease (exit 4)."""

    def __init__(self, url: str, info: LeaseInfo) -> None:
        self.info = info
        super().__init__(
            f"the state {url} is held by {info.holder.describe()}: its lease was renewed at "
            f"{utc(info.renewed_at)} and expires at {utc(info.expires_at)} unless renewed; "
            f"not starting a second run (run again once it has finished or its lease expired)")


def utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def read_lease(s3: S3) -> LeaseInfo | None:
    found = s3.get(LEASE_KEY)
    return None if found is None else _info(found.body, found.last_modified, found.server_now)


def _info(body: bytes, last_modified: float, server_now: float) -> LeaseInfo:
    try:
        d = json.loads(body)
        holder = Holder.from_dict(d.get("holder") or {})
        ttl = float(d.get("ttl_s") or DEFAULT_TTL_S)
    except (ValueError, TypeError, AttributeError):
        holder, ttl = Holder("unknown", "?", host="?", pid=0, started_at=0.0, run=""), DEFAULT_TTL_S
    return LeaseInfo(holder, last_modified, ttl, server_now)


class Lease:
    """This process's lease on one state (see the module doc)."""

    def __init__(self, s3: S3, holder: Holder, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.s3 = s3
        self.holder = holder
        self.ttl_s = ttl_s
        self.margin_s = max(2.0, ttl_s / 5)
        self.etag: str | None = None
        self.valid_until = 0.0
        self.lost_reason: str | None = None
        self.taken_over: LeaseInfo | None = None  # the expired lease this one replaced
        self.renewals = 0
        self.on_lost: list[Callable[[str], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _body(self) -> bytes:
        return json.dumps({"holder": json.loads(self.holder.to_json()), "ttl_s": self.ttl_s,
                           "written_at": time.time(), "nonce": uuid.uuid4().hex},
                          sort_keys=True).encode()

    # ---- taking it --------------------------------------------------------------
    def acquire(self) -> None:
        """Hold the lease, or raise LeaseHeld (StateError / StateUnavailable for S3 trouble)."""
        for _ in range(5):  # a race with another taker: look again
            started = time.monotonic()
            etag = self.s3.create(LEASE_KEY, self._body())
            if etag is not None:
                self._held(etag, started)
                return
            found = self.s3.get(LEASE_KEY)
            if found is None:
                continue  # given back meanwhile
            info = _info(found.body, found.last_modified, found.server_now)
            if not info.expired:
                raise LeaseHeld(self.s3.where(), info)
            started = time.monotonic()
            etag = self.s3.replace(LEASE_KEY, self._body(), found.etag)
            if etag is not None:
                self.taken_over = info
                self._held(etag, started)
                return
        raise StateUnavailable(f"cannot take the lease {self.s3.where(LEASE_KEY)}: it keeps "
                               "changing under us")

    def _held(self, etag: str, started: float) -> None:
        self.etag = etag
        self.valid_until = started + self.ttl_s - self.margin_s
        self._thread = threading.Thread(target=self._keep, name="batchcopy-lease", daemon=True)
        self._thread.start()

    # ---- keeping it ------------------------------------------------------------------
    def valid(self) -> bool:
        return self.lost_reason is None and time.monotonic() < self.valid_until

    def check(self) -> None:
        """StateUnavailable unless the lease is still ours."""
        if not self.valid():
            raise StateUnavailable(self.lost_reason or f"the lease {self.s3.where(LEASE_KEY)} "
                                   "could not be renewed in time")

    def _keep(self) -> None:
        interval = self.ttl_s / 4
        next_at = time.monotonic() + interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            if time.monotonic() >= self.valid_until:
                self._lose(f"the lease {self.s3.where(LEASE_KEY)} could not be renewed before "
                           "it ran out")
                return
            started = time.monotonic()
            try:
                etag = self.s3.replace(LEASE_KEY, self._body(), self.etag or "",
                                       until=self.valid_until)
            except (StateUnavailable, StateError) as exc:
                self._lose(f"the lease {self.s3.where(LEASE_KEY)} could not be renewed: {exc}")
                return
            if etag is None:
                self._lose(f"the lease {self.s3.where(LEASE_KEY)} was taken by another run")
                return
            with self._lock:
                self.etag = etag
                self.valid_until = started + self.ttl_s - self.margin_s
                self.renewals += 1
            next_at = started + interval

    def _lose(self, reason: str) -> None:
        with self._lock:
            if self.lost_reason is not None:
                return
            self.lost_reason = reason
            self.valid_until = 0.0
        for callback in list(self.on_lost):
            try:
                callback(reason)
            except Exception:  # noqa: BLE001 - a callback must not keep the others from running
                pass

    # ---- giving it back ----------------------------------------------------------------
    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.etag is not None and self.lost_reason is None:
            self.s3.delete_if(LEASE_KEY, self.etag)
        self.etag = None
