"""The files a run reads and writes, checked before it touches any of them: no file may
play two parts.

`--report` naming the journal would overwrite the journal, `--report` naming a Parquet
manifest would overwrite the manifest, `--log-file` naming the manifest would append log
lines to it. Each part is compared by where its path leads once symlinks are resolved,
and, for a file that exists, by its device and inode (a hard link is the same file).
The journal's companions (`-wal`, `-shm`, `.lock`) and the report's summary JSON count as
theirs. A clash is a SetupError: one line naming both parts and the option to change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from batchcopy.aws.preflight import SetupError
from batchcopy.aws.storage import is_s3

JOURNAL_COMPANIONS = ("", "-wal", "-shm", ".lock")


@dataclass(frozen=True)
class Part:
    """One file a run uses: what it is ("the journal"), its path as given, and the option
    that moves it (None for what the user cannot move this way, the manifest)."""

    what: str
    path: str
    option: str | None = None


def _keys(path: str) -> set[tuple[object, ...]]:
    if is_s3(path):
        return {("s3", path)}
    p = Path(path).expanduser()
    keys: set[tuple[object, ...]] = {("path", str(p.resolve()))}
    try:
        st = os.stat(p)
    except OSError:
        return keys
    keys.add(("inode", st.st_dev, st.st_ino))
    return keys


def journal_parts(journal: str | Path, option: str | None = "--journal") -> list[Part]:
    return [Part("the journal", f"{journal}{suffix}", option) for suffix in JOURNAL_COMPANIONS]


def check_distinct(parts: Iterable[Part]) -> None:
    """SetupError if two parts are one file."""
    seen: list[tuple[Part, set[tuple[object, ...]]]] = []
    for part in parts:
        keys = _keys(part.path)
        for earlier, their in seen:
            if keys & their and earlier.what != part.what:
                raise SetupError(_clash(earlier, part))
        seen.append((part, keys))


def _clash(first: Part, second: Part) -> str:
    same = os.path.abspath(first.path) == os.path.abspath(second.path)
    how = "" if same else " (after resolving symlinks and links)"
    movable = second if second.option else first
    other = first if movable is second else second
    fix = (f"give another {movable.option}" if movable.option
           else "give another path")
    return (f"{movable.what} {movable.path} is the same file as {other.what} "
            f"{other.path}{how}: writing one would destroy the other; nothing was sent; {fix}")


def check_run_files(manifest: str, report: str, journal: Path, log_file: str | None, *,
                    verify: bool = False) -> None:
    """SetupError if two parts of one `batchcopy run` are one file: the manifest, the
    journal, the report and its summary, the log file, `--verify`'s report."""
    from batchcopy.report.summary import summary_path

    parts = [Part("the manifest", manifest), *journal_parts(journal),
             Part("the report (--report)", report, "--report"),
             Part("the report's summary", summary_path(report), "--report")]
    if verify:  # x.parquet -> x-verify.parquet (commands/verify.py)
        checked = report.removesuffix(".parquet") + "-verify.parquet"
        parts += [Part("--verify's report", checked, "--report"),
                  Part("--verify's summary", summary_path(checked), "--report")]
    if log_file:
        parts.append(Part("the log file (--log-file)", log_file, "--log-file"))
    check_distinct(parts)


def run_clash(manifest: str, report: str, journal: Callable[[], Path], log_file: str | None, *,
              verify: bool = False) -> str | None:
    """check_run_files' line, or None; `journal()` resolves the journal's path (a
    --journal that cannot be is the run's to say, later, in its own words)."""
    try:
        path = journal()
    except SetupError:
        return None
    try:
        check_run_files(manifest, report, path, log_file, verify=verify)
    except SetupError as exc:
        return str(exc)
    return None
