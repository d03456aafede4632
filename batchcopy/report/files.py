"""Files the reports write: atomically (a `.tmp` beside, fsynced, renamed), and the few
facts about `s3://` destinations they need without importing aioboto3."""

from __future__ import annotations

import os
from pathlib import Path


def tmp_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place."""
    return path.with_name(path.name + ".tmp")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_local_atomic(data: bytes, path: Path) -> None:
    """`data` at `path`, whole or not at all (a crash leaves the old file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_s3(url: str) -> bool:
    """storage.is_s3, without importing storage (aioboto3) for plain local paths."""
    if not url[:3].lower() == "s3:":
        return False
    from batchcopy.aws.storage import is_s3 as storage_is_s3

    return storage_is_s3(url)


def s3_basename(url: str) -> str:
    """The last part of an s3:// key: the name its local staging copy takes."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name or "report.parquet"
