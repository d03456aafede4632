"""Run locks on local files: an exclusive `flock` held by a live process, with a line in
the file saying who holds it (host, pid, what it runs, since when). The kernel drops the
lock when the process dies, so kill -9 leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any


class LockedError(Exception):
    """Another live process holds the lock."""


def take_lock(path: Path, holder: str | None, *, what: str) -> Any:
    """An exclusive flock on `path` (made if missing), with `holder` (a line saying who)
    written in it; LockedError naming the current holder if another process has it."""
    try:
        fh = open(path, "a+")
    except OSError as exc:
        raise OSError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        found = fh.read().strip()
        fh.close()
        raise LockedError(f"{what} is in use by another batchcopy run"
                            + (f" ({describe_holder(found)})" if found else "")) from None
    fh.seek(0)
    fh.truncate()
    fh.write(holder or json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    fh.flush()
    return fh


def describe_holder(text: str) -> str:
    """A lock file's line for people: 'pid 123 on host h, manifest m.csv, since ...'."""
    try:
        found = json.loads(text)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        return f"pid {text}" if text.isdigit() else text
    parts = [f"pid {found.get('pid')}" + (f" on host {found['host']}" if found.get("host") else "")]
    if found.get("manifest"):
        parts.append(f"{found.get('command', 'run')} of {found['manifest']}")
    if found.get("started_at"):
        parts.append("since " + time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                              time.gmtime(float(found["started_at"]))))
    return ", ".join(parts)


def probe_lock(path: Path) -> str | None:
    """The holder line of `path` if a live process holds its lock, else None. (A shared
    probe: a run starting at this very instant may find the lock busy and exit 4.)"""
    try:
        fh = open(path)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "?"
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return None
    finally:
        fh.close()
