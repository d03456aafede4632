"""What `report`, `verify` and `status` read: a state (its ledger: a directory, a journal
file, or s3://bucket/prefix/; by default --state, BATCHCOPY_STATE or the state directory) or
a report (local or s3://), opened as a `Source` (its rows, read again at each call, and the
run's context); a source that cannot be read, or an output that cannot be made, is a
`ReportError`.

    state    rows derived from the ledger (report/results.py) for its current manifest (the
             latest run's), the latest run's context and calls from its `runs` / `calls`
             tables
    report   the rows as written, the run's context from the file's metadata (format 2)
             or the summary JSON beside it
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from batchcopy.report.rows import RowResult


class ReportError(Exception):
    """A source that cannot be read, or an output that cannot be made: one line, exit 2."""


def locate(source: str | None, state: str | None = None) -> Any:
    """The state SOURCE names (None: SOURCE is a report); with no SOURCE, --state /
    BATCHCOPY_STATE / the state directory."""
    from batchcopy.journal.state import StateError, resolve, source_location

    try:
        return source_location(source) if source else resolve(state)
    except StateError as exc:
        raise ReportError(str(exc)) from None


def journal_context(journal: Any) -> dict[str, Any] | None:
    """The latest run of a journal as the report's run context (its stats flattened in)."""
    record = journal.run_record()
    if record is None:
        return None

    def iso(t: float | None) -> str | None:
        return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()

    return {**record["stats"], "run_id": record["run_id"], "manifest": record["manifest"],
            "started_at": iso(record["started_at"]), "finished_at": iso(record["finished_at"]),
            "exit_code": record["exit_code"]}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


@dataclass
class Source:
    """A journal or a report, opened: its rows (read again at each call), the run's
    context, and (from a journal) the run's calls and the journal itself."""

    name: str
    kind: str  # "journal" (a state's ledger) | "report"
    run: dict[str, Any] | None
    rows: Callable[[], Iterator[RowResult]]
    calls: list[tuple[float, str, str | None]] | None = None
    journal: Any = None
    report_version: str | None = None
    location: Any = None  # the state, for a ledger


@contextmanager
def open_source(source: str | None, state: str | None = None) -> Iterator[Source]:
    """Open a state's ledger or a report (local or s3://); a source that cannot be read is
    a ReportError."""
    location = locate(source, state)
    if location is not None:
        with _ledger(location) as found:
            yield found
    else:
        assert source is not None
        with _local_report(source) as local:
            yield _report(source, local)


@contextmanager
def _ledger(location: Any) -> Iterator[Source]:
    from batchcopy.journal.state import StateError, StateUnavailable, open_for_reading
    from batchcopy.report.results import journal_results

    try:
        opened = open_for_reading(location)
    except (StateError, StateUnavailable) as exc:
        raise ReportError(str(exc)) from None
    try:
        journal = opened.journal
        name = location.url if location.kind == "s3" else str(journal.path)
        run = journal_context(journal)
        calls = journal.run_calls(run["run_id"]) if run else None
        yield Source(name, "journal", run, lambda: journal_results(journal), calls, journal,
                     location=location)
    finally:
        opened.close()


def _report(source: str, local: Path) -> Source:
    from batchcopy.report.parquet import iter_report_rows, report_metadata
    from batchcopy.report.summary import summary_path

    try:
        meta = report_metadata(local)
    except Exception as exc:  # not Parquet, truncated...
        raise ReportError(f"{source} is not a readable batchcopy report: {exc}") from None
    run = meta["run"]
    if run is None and local == Path(source):  # a format-1 report: the summary JSON beside it
        run = _read_json(Path(summary_path(source)))
        if run is not None:
            run = {k: v for k, v in run.items() if k not in ("rows", "by_status", "by_error_code")}
    return Source(source, "report", run, lambda: iter_report_rows(local),
                  report_version=meta["report_version"])


@contextmanager
def _local_report(source: str) -> Iterator[Path]:
    from batchcopy.aws import storage

    if not storage.is_s3(source):
        path = Path(source)
        if not path.is_file():
            raise ReportError(f"report not found: {source}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="batchcopy-report-") as tmp:
        try:
            local = asyncio.run(storage.download(source, Path(tmp)))
        except FileNotFoundError:
            raise ReportError(f"report not found: {source}") from None
        yield local
